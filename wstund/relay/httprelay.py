"""The HTTP-through-relay engine (DESIGN 3.3): an HTTP request parked under an id whose
response comes back over a relay connection, streamed to the caller with bounded memory.

One ``Exchange`` per request. The owner side (the relay connection answering) feeds it
``start`` / ``feed`` / ``end`` / ``fail``; the caller side awaits the head, then iterates
the body. Bytes pass through a channel bounded both in chunks (``channel_size``) and in bytes
(``window``); on top of it the owner gets a credit window (``http_window`` messages, in bytes)
so a page that honours it never has more than ``window`` bytes in flight, and one that ignores
it is slowed by the bounds (its socket's reader blocks, and TCP pushes back). Timeouts: no
head within ``start_timeout`` is a 504, no chunk for ``chunk_timeout`` truncates. Owner gone
before the head is a 502; after it the body is cut short, so the caller sees a truncated
response.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..httpheaders import InvalidHead, check_headers, end_to_end
from . import protocol

if TYPE_CHECKING:
    from .peer import Peer


class RelayFailure(Exception):
    """The relayed request cannot be answered: an HTTP status, a stable code, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Truncated(Exception):
    """The body stopped before its end (owner gone, owner error, idle timeout)."""


@dataclass
class Head:
    """Status and headers the owner answered with."""

    status: int
    headers: list[tuple[str, str]]


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


class Exchange:
    """One parked HTTP request and the stream of its response."""

    def __init__(
        self,
        relay: HttpRelay,
        request_id: str,
        owner: Peer,
        *,
        window: int,
        channel_size: int,
    ) -> None:
        self.id = request_id
        self.owner = owner
        self.window = window
        self.head: Head | None = None
        self.failure: str | None = None
        self.finished = False
        self.binary = False
        self.received = 0
        self.delivered = 0
        self.buffered = 0
        self._relay = relay
        self._head_ready = trio.Event()
        self._send, self._recv = trio.open_memory_channel[bytes](channel_size)
        self._ungranted = 0
        self._closed = False
        self._drained = trio.Event()  # set whenever queued bytes leave (or the exchange ends)

    @property
    def done(self) -> bool:
        """True once the owner ended or failed the response (no more bytes will come)."""
        return self.finished or self.failure is not None

    # -- owner side -------------------------------------------------------------------------

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The owner's response head."""
        if self.head is not None or self.done:
            raise RelayFailure(502, "already_started", "response head sent twice")
        self.head = Head(status, headers)
        self._head_ready.set()

    async def feed(self, data: bytes, timeout: float) -> None:
        """Queue body bytes; waits (up to ``timeout``) while the caller is behind."""
        if self.done or not data:
            return
        if self.head is None:
            self.start(200, [])
        self.received += len(data)
        with trio.move_on_after(timeout) as waited:
            # Bytes bound: an owner that ignores its credit waits here (its socket's reader
            # with it) until the caller has taken the queue below ``window``.
            while self.buffered and self.buffered + len(data) > self.window and not self.done:
                if self._drained.is_set():
                    self._drained = trio.Event()
                await self._drained.wait()
        if self.done:
            return
        if waited.cancelled_caught:
            self.fail("the caller stopped reading")
            self.abort_owner("caller stopped reading")
            return
        self.buffered += len(data)
        self._relay.note_buffered(len(data))
        try:
            try:
                self._send.send_nowait(data)
                return
            except trio.WouldBlock:
                pass
            with trio.move_on_after(timeout):
                await self._send.send(data)
                return
            self._unbuffer(len(data))
            self.fail("the caller stopped reading")
            self.abort_owner("caller stopped reading")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._unbuffer(len(data))

    def end(self) -> None:
        """The owner finished the body."""
        if self.done:
            return
        if self.head is None:
            self.start(200, [])
        self.finished = True
        self._send.close()

    def fail(self, reason: str) -> None:
        """The response cannot complete: before the head a 502, after it a truncated body."""
        if self.done:
            return
        self.failure = reason
        self._send.close()
        self._head_ready.set()
        self._drained.set()

    def abort_owner(self, reason: str) -> None:
        """Tell the owner to stop sending (``http_abort``)."""
        self.owner.offer(protocol.encode("http_abort", {"request_id": self.id, "reason": reason}))

    # -- caller side ------------------------------------------------------------------------

    async def wait_head(self, timeout: float) -> Head:
        """The response head, or RelayFailure: 504 when none came in time, 502 on failure."""
        with trio.move_on_after(timeout):
            await self._head_ready.wait()
        if self.head is not None:
            return self.head
        if self.failure is not None:
            raise RelayFailure(502, "owner_failed", f"the owner did not answer: {self.failure}")
        self.fail("no response head in time")
        self.abort_owner("timeout")
        raise RelayFailure(504, "owner_timeout", f"no response from the owner within {timeout:g}s")

    async def body(self, chunk_timeout: float) -> AsyncIterator[bytes]:
        """Yield the body; raises Truncated when it stops short. Grants credit as it goes."""
        while True:
            with trio.move_on_after(chunk_timeout) as idle:
                try:
                    data = await self._recv.receive()
                except trio.EndOfChannel:
                    if self.failure is not None:
                        raise Truncated(self.failure) from None
                    return
            if idle.cancelled_caught:
                self.fail(f"no data for {chunk_timeout:g}s")
                self.abort_owner("idle timeout")
                raise Truncated(self.failure)
            self._unbuffer(len(data))
            yield data
            self.delivered += len(data)
            self._grant(len(data))

    def _grant(self, count: int) -> None:
        self._ungranted += count
        if self.done or self._ungranted < max(1, self.window // 4):
            return
        self.owner.offer(
            protocol.encode("http_window", {"request_id": self.id, "bytes": self._ungranted})
        )
        self._ungranted = 0

    def _unbuffer(self, count: int) -> None:
        self.buffered -= count
        self._relay.note_buffered(-count)
        self._drained.set()

    def close(self) -> None:
        """The caller is done (finished, failed or gone): forget the exchange, free its bytes."""
        if self._closed:
            return
        self._closed = True
        if not self.done:
            self.fail("the caller went away")
            self.abort_owner("caller went away")
        self._recv.close()
        while True:
            try:
                self._unbuffer(len(self._recv.receive_nowait()))
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self._relay.forget(self)


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
        self.exchanges: dict[str, Exchange] = {}
        self.programs: dict[str, Program] = {}
        self.buffered = 0
        self.peak_buffered = 0
        self._new_id = new_id

    def open(self, owner: Peer, *, window: int, channel_size: int) -> Exchange:
        """Park a new request answered by ``owner``."""
        request_id = self._new_id()
        while request_id in self.exchanges:
            request_id = self._new_id()
        exchange = Exchange(self, request_id, owner, window=window, channel_size=channel_size)
        self.exchanges[request_id] = exchange
        return exchange

    def find(self, owner: Peer, request_id: str) -> Exchange | None:
        """The live exchange ``request_id`` if ``owner`` is the one answering it."""
        exchange = self.exchanges.get(request_id)
        if exchange is None or exchange.owner is not owner:
            return None
        return exchange

    def forget(self, exchange: Exchange) -> None:
        """Drop a closed exchange from the map."""
        if self.exchanges.get(exchange.id) is exchange:
            del self.exchanges[exchange.id]

    def note_buffered(self, delta: int) -> None:
        """Track the bytes held between owners and callers (and their peak)."""
        self.buffered += delta
        self.peak_buffered = max(self.peak_buffered, self.buffered)

    def peer_gone(self, peer: Peer) -> None:
        """A relay connection closed: its exchanges fail, its programs are unregistered."""
        for exchange in [e for e in self.exchanges.values() if e.owner is peer]:
            exchange.fail("the owner disconnected")
        for name in [n for n, p in self.programs.items() if p.owner is peer]:
            del self.programs[name]
