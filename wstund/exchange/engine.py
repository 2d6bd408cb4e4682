"""The I/O edge of the exchange engine: ``ExchangeCore`` driven by trio events and clocks.

An ``Exchange`` wraps one core; an ``ExchangeTable`` holds the exchanges of a front end (the
relay's, a tunnel session's, a MoosicBox sender's) by id and counts their bytes. The owner's
socket reader calls the ``on_*`` methods, which never block; the caller's task awaits the head
and iterates the body. Actions the core returns go to the owner through a ``Link`` whose two
methods queue a frame on the owner's socket and return at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import trio

from .core import CALLER_GONE, Abort, Action, ExchangeCore, FailKind, Failure, Grant, Head, Limits

K = TypeVar("K", bound=Hashable)


class ExchangeFailed(Exception):
    """The exchange ended without a head (or, from ``collect``, without its whole body)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure

    @property
    def kind(self) -> FailKind:
        """Why: map TIMEOUT to 504 and the rest to 502."""
        return self.failure.kind


class Truncated(ExchangeFailed):
    """The body stopped before its end: the caller must see a cut response, not a short one."""


class TooLarge(Exception):
    """A buffered body grew past its cap (the request was aborted at the owner)."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the response is larger than {cap} bytes")
        self.cap = cap


class Link(Protocol):
    """The way back to an exchange's owner; both calls queue a frame and return at once."""

    def grant(self, exchange: Exchange[Any], credit: int) -> None:
        """Give the owner ``credit`` more bytes on ``exchange`` (no-op without flow control)."""

    def abort(self, exchange: Exchange[Any], reason: str) -> None:
        """Tell the owner to stop working on ``exchange``."""


class Exchange(Generic[K]):
    """One parked request: the owner feeds its response, the caller awaits and reads it."""

    def __init__(
        self,
        table: ExchangeTable[K],
        exchange_id: K,
        owner: object,
        link: Link,
        limits: Limits,
        *,
        ordered: bool = False,
    ) -> None:
        self.id = exchange_id
        self.owner = owner
        self.link = link
        self.core = ExchangeCore(limits, ordered=ordered)
        self._table = table
        self._held = 0
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"<Exchange {self.id!r} held={self.core.held}>"

    @property
    def head(self) -> Head | None:
        """The response head once it came."""
        return self.core.head

    @property
    def failure(self) -> Failure | None:
        """Why the exchange ended short, if it did."""
        return self.core.failure

    @property
    def done(self) -> bool:
        """No more bytes will come from the owner."""
        return self.core.done

    # -- owner side: called by the owner's socket reader, never blocks ------------------------

    def on_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The response head."""
        self._apply(self.core.on_head(Head(status, headers)))

    def on_data(self, chunk: bytes, seq: int | None = None) -> None:
        """Body bytes (packet ``seq`` when the exchange is ordered)."""
        self._apply(self.core.on_data(chunk, seq))

    def on_end(self, last_seq: int | None = None) -> None:
        """The body ended (after packet ``last_seq`` when ordered)."""
        self._apply(self.core.on_end(last_seq))

    def on_error(self, message: str) -> None:
        """The owner gave the request up."""
        self._apply(self.core.on_error(message))

    def on_owner_lost(self) -> None:
        """The owner's socket is gone."""
        self._apply(self.core.on_owner_lost())

    async def feed(self, chunk: bytes, timeout: float) -> None:
        """``on_data`` for an owner that is slowed rather than cut (``Limits.overdraft=None``):
        waits up to ``timeout`` while the caller is behind, then fails the exchange."""
        if self.core.done or not chunk:
            return
        with trio.move_on_after(timeout) as waited:
            while not self.core.has_room(len(chunk)):
                await self._changed.wait()
        if waited.cancelled_caught:
            self._apply(self.core.on_stall())
            return
        self.on_data(chunk)

    # -- caller side -----------------------------------------------------------------------

    async def wait_head(self, timeout: float) -> Head:
        """The head; ExchangeFailed when the owner failed or none came within ``timeout``."""
        with trio.move_on_after(timeout if timeout > 0 else float("inf")):
            while self.core.head is None and self.core.failure is None:
                await self._changed.wait()
        if self.core.head is None:
            self._apply(self.core.on_head_timeout(timeout))
        if self.core.head is None:
            assert self.core.failure is not None
            raise ExchangeFailed(self.core.failure)
        return self.core.head

    @property
    def arrived(self) -> bool:
        """The whole body has arrived (the owner ended it), taken or not."""
        return self.core.finished

    @property
    def complete(self) -> bool:
        """The whole body has arrived and been taken: the chunk just taken was the last."""
        return self.core.finished and self.core.drained

    async def body(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """The body's chunks as they come, giving credit back as each is taken; Truncated when
        it stops short (owner gone or failed, ``idle_timeout`` without data)."""
        core = self.core
        while True:
            chunk = core.pop()
            if chunk is None:
                if core.finished:
                    return
                if core.failure is not None:
                    raise Truncated(core.failure)
                with trio.move_on_after(idle_timeout if idle_timeout > 0 else float("inf")):
                    await self._changed.wait()
                    continue
                self._apply(core.on_idle_timeout(idle_timeout))
                continue
            self._apply([])  # bytes left the queue: wake a waiting owner, update the count
            yield chunk
            self._apply(core.consumed(len(chunk)))

    async def collect(self, cap: int, idle_timeout: float) -> bytes:
        """The whole body (buffered mode); TooLarge past ``cap`` bytes, Truncated if cut."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.body(idle_timeout):
            size += len(chunk)
            if size > cap:
                self.close(f"the response is larger than {cap} bytes")
                raise TooLarge(cap)
            parts.append(chunk)
        return b"".join(parts)

    def close(self, reason: str = CALLER_GONE) -> None:
        """The caller is done (finished, failed or gone): abort an unfinished owner, free the
        queued bytes and forget the exchange. Idempotent; call it in a ``finally``."""
        if self.core.closed:
            return
        self._apply(self.core.on_caller_gone(reason))
        self._table.forget(self)

    # -- internals -------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the core's actions, account the bytes held, wake every waiter."""
        held = self.core.held
        if held != self._held:
            self._table.note_held(held - self._held)
            self._held = held
        for action in actions:
            if isinstance(action, Grant):
                self.link.grant(self, action.credit)
            elif isinstance(action, Abort):
                self.link.abort(self, action.reason)
        self._changed.set()
        self._changed = trio.Event()


class ExchangeTable(Generic[K]):
    """The live exchanges of one front end by id, and the bytes they hold (``exchange_class``:
    a front end's subclass of ``Exchange`` with its own conveniences)."""

    def __init__(
        self, new_id: Callable[[], K], exchange_class: type[Exchange[K]] = Exchange
    ) -> None:
        self.exchanges: dict[K, Exchange[K]] = {}
        self._class = exchange_class
        self.held = 0
        self.peak_held = 0
        self._new_id = new_id

    def __len__(self) -> int:
        return len(self.exchanges)

    def __iter__(self) -> Iterator[Exchange[K]]:
        return iter(list(self.exchanges.values()))

    def open(
        self,
        owner: object,
        link: Link,
        limits: Limits,
        *,
        ordered: bool = False,
        exchange_id: K | None = None,
    ) -> Exchange[K]:
        """Park a new request answered by ``owner`` (under a fresh id unless one is given)."""
        if exchange_id is None:
            exchange_id = self._new_id()
            while exchange_id in self.exchanges:
                exchange_id = self._new_id()
        elif exchange_id in self.exchanges:
            raise KeyError(f"exchange {exchange_id!r} is in use")
        exchange = self._class(self, exchange_id, owner, link, limits, ordered=ordered)
        self.exchanges[exchange_id] = exchange
        return exchange

    def get(self, exchange_id: K) -> Exchange[K] | None:
        """The live exchange ``exchange_id``."""
        return self.exchanges.get(exchange_id)

    def find(self, owner: object, exchange_id: K) -> Exchange[K] | None:
        """The live exchange ``exchange_id`` if ``owner`` is the one answering it."""
        exchange = self.exchanges.get(exchange_id)
        return exchange if exchange is not None and exchange.owner is owner else None

    def owned_by(self, owner: object) -> list[Exchange[K]]:
        """The live exchanges ``owner`` answers."""
        return [e for e in self.exchanges.values() if e.owner is owner]

    def owner_lost(self, owner: object) -> None:
        """``owner``'s socket closed: its exchanges fail (502 before the head, else cut)."""
        for exchange in self.owned_by(owner):
            exchange.on_owner_lost()

    def forget(self, exchange: Exchange[K]) -> None:
        """Drop a closed exchange from the table."""
        if self.exchanges.get(exchange.id) is exchange:
            del self.exchanges[exchange.id]

    def note_held(self, delta: int) -> None:
        """Track the bytes held between owners and callers (and their peak)."""
        self.held += delta
        self.peak_held = max(self.peak_held, self.held)
