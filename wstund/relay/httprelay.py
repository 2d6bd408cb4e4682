"""HTTP through the relay: requests parked under an id and answered over a relay
connection, on the shared exchange engine (``wstund.exchange``).

The owner side (the relay connection answering) calls ``start`` / ``feed`` / ``end`` / ``fail``
on an ``Exchange``; the caller side awaits the head, then iterates the body. The owner gets a
credit window (``http_window`` messages, in bytes) so a page that honours it never has more than
``window`` bytes in flight; one that ignores it is slowed (``feed`` waits, its socket's reader
with it, and TCP pushes back), never cut. Timeouts: no head within ``start_timeout`` is a 504,
no chunk for ``chunk_timeout`` truncates. Owner gone before the head is a 502; after it the body
is cut short, so the caller sees a truncated response. Every ``http_abort`` goes out at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import exchange as engine
from ..exchange import ExchangeFailed, FailKind, Head, Limits, Truncated
from ..httpheaders import InvalidHead, check_headers, end_to_end
from . import protocol

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["Exchange", "ExchangeFailed", "Head", "HttpRelay", "RelayFailure", "Truncated"]


class RelayFailure(Exception):
    """The relayed request cannot be answered: an HTTP status, a stable code, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def clean_headers(headers: dict[str, Any], also_drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """An owner's header object as checked end-to-end (name, value) pairs: a list value is a
    repeated header, null drops it; InvalidHead when one cannot be given to the caller."""
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, (dict, list)):
                raise InvalidHead(f"the value of header {name!r} is not text")
            pairs.append((name, _header_text(item)))
    return check_headers(end_to_end(pairs, also_drop))


def _header_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as JavaScript would write it
    return str(value)


class RelayLink:
    """The way back to a relay owner: ``http_window`` credit and ``http_abort``."""

    def grant(self, exchange: engine.Exchange[Any], credit: int) -> None:
        """Give the owner ``credit`` more bytes."""
        payload = {"request_id": exchange.id, "bytes": credit}
        _owner(exchange).offer(protocol.encode("http_window", payload))

    def abort(self, exchange: engine.Exchange[Any], reason: str) -> None:
        """Tell the owner to stop, with the reason codes the relay has always sent."""
        failure = exchange.failure
        if failure is not None:
            if failure.kind is FailKind.TIMEOUT:
                reason = "timeout" if exchange.head is None else "idle timeout"
            elif failure.kind is FailKind.STALLED:
                reason = "caller stopped reading"
            elif failure.kind is FailKind.CALLER and reason == engine.CALLER_GONE:
                reason = "caller went away"
        payload = {"request_id": exchange.id, "reason": reason}
        _owner(exchange).offer(protocol.encode("http_abort", payload))


def _owner(exchange: engine.Exchange[Any]) -> Peer:
    owner: Peer = exchange.owner  # type: ignore[assignment]
    return owner


class Exchange(engine.Exchange[str]):
    """One parked request: the relay owner's conveniences on top of the engine's exchange."""

    @property
    def window(self) -> int:
        """The owner's credit window, bytes (announced in the request)."""
        return self.core.limits.window

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The owner's response head; RelayFailure when it comes twice or too late."""
        if self.head is not None or self.done:
            raise RelayFailure(502, "already_started", "response head sent twice")
        self.on_head(status, headers)

    async def feed(self, data: bytes, timeout: float) -> None:
        """Queue body bytes (an implicit 200 head first); waits while the caller is behind."""
        if self.head is None and not self.done:
            self.on_head(200, [])
        await super().feed(data, timeout)

    def end(self) -> None:
        """The owner finished the body."""
        if self.head is None and not self.done:
            self.on_head(200, [])
        self.on_end()

    def fail(self, reason: str) -> None:
        """The response cannot complete: before the head a 502, after it a truncated body."""
        self.on_error(reason)

    def abort_owner(self, reason: str) -> None:
        """Tell the owner to stop sending (``http_abort``)."""
        self.link.abort(self, reason)


@dataclass
class Program:
    """A program registered over a relay connection (``register``): it answers ``/{name}/…``."""

    name: str
    owner: Peer
    description: str = ""
    registration: dict[str, Any] = field(default_factory=dict)


class HttpRelay:
    """Every parked exchange and registered program; one per Hub."""

    def __init__(self, new_id: Callable[[], str] = lambda: secrets.token_urlsafe(12)) -> None:
        self.table: engine.ExchangeTable[str] = engine.ExchangeTable(new_id, Exchange)
        self.programs: dict[str, Program] = {}
        self._link = RelayLink()

    @property
    def exchanges(self) -> dict[str, engine.Exchange[str]]:
        """The live exchanges by request id."""
        return self.table.exchanges

    @property
    def buffered(self) -> int:
        """Bytes held between owners and callers."""
        return self.table.held

    @property
    def peak_buffered(self) -> int:
        """The most bytes ever held at once."""
        return self.table.peak_held

    def open(self, owner: Peer, *, window: int, channel_size: int) -> Exchange:
        """Park a new request answered by ``owner`` (slowed, never cut, past ``window``)."""
        limits = Limits(window, overdraft=None, grant_at=window // 4, max_chunks=channel_size)
        exchange = self.table.open(owner, self._link, limits)
        assert isinstance(exchange, Exchange)
        return exchange

    def find(self, owner: Peer, request_id: str) -> Exchange | None:
        """The live exchange ``request_id`` if ``owner`` is the one answering it."""
        exchange = self.table.find(owner, request_id)
        return exchange if isinstance(exchange, Exchange) else None

    def peer_gone(self, peer: Peer) -> None:
        """A relay connection closed: its exchanges fail, its programs are unregistered."""
        self.table.owner_lost(peer)
        for name in [n for n, p in self.programs.items() if p.owner is peer]:
            del self.programs[name]
