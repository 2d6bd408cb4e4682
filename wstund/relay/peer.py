"""One relay WebSocket as the relay sees it: its link to the socket, its queue, its rooms.

Fan-out never blocks on a peer. ``offer`` encodes the frame through the link (one encoding
shared by every recipient of a broadcast) and, when nothing waits before it, writes it straight
to the socket. Only frames the socket cannot take now are queued, for a writer task started on
demand that writes them (up to ``batch_bytes`` in one write) as the socket drains. Past
``outbox_size`` queued frames a slow-consumer clock starts: a peer whose socket takes no frame
at all for ``slow_consumer_timeout`` while they wait, or whose queued bytes pass
``max_queued_bytes``, is closed with 4008 — nothing is dropped without the client being told,
and a reader that keeps up with a burst is never cut.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from .. import closecodes
from .budget import RateBudget

if TYPE_CHECKING:
    from .instance import Instance

Frame = str | bytes

_peer_ids = itertools.count(1)
_OWED = 2  # Link.write_nowait: part of the frame was written, the rest is owed


class Link(Protocol):
    """The socket side of a Peer (the lean lane's socket, or a Quart websocket)."""

    def encode(self, frame: Frame) -> Frame:
        """What is written for ``frame`` (and counted against the queue bounds)."""

    @property
    def owes(self) -> bool:
        """Part of a frame waits: ``write`` must run before anything else is written."""

    def write_nowait(self, item: Frame) -> int:
        """Write ``item`` now if nothing waits before it and the socket takes it: 0 if nothing
        was written, 1 if all of it, 2 if part (the rest is owed)."""

    async def write(self, items: list[Frame]) -> None:
        """Write what is owed and ``items``, waiting for the socket."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code``."""


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Peer:
    """A connected relay client: owner of some rooms, or member of one."""

    def __init__(
        self,
        link: Link,
        *,
        address: str,
        outbox_size: int,
        slow_consumer_timeout: float,
        max_queued_bytes: int,
        close_timeout: float = 10.0,
        on_close: Callable[[Peer], None] = lambda peer: None,
        batch_bytes: int = 0,
    ) -> None:
        self.id = next(_peer_ids)
        self.address = address
        self.owned: dict[str, Instance] = {}
        self.joined: Instance | None = None
        self.user_id: str | None = None
        # The browser key from the handshake's cookie (relay.ownership): proves room ownership.
        self.browser_key: str | None = None
        self.rate: RateBudget | None = None  # its room messages' rate (budget.charge)
        self.invalid_messages = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames_sent = 0
        self.writes = 0  # socket writes: fewer than frames_sent when queued frames were batched
        self.queued_bytes = 0
        # Cancelled by close() while the reading task waits for a frame (``receiving``).
        self.read_scope = trio.CancelScope()
        self.receiving = False
        self._link = link
        self._encode = link.encode
        self._write_nowait = link.write_nowait
        self._batch_bytes = batch_bytes
        self._queue: deque[Frame | _Close] = deque()
        self._outbox_size = outbox_size
        self._max_queued_bytes = max_queued_bytes
        self._slow_consumer_timeout = slow_consumer_timeout
        self._close_timeout = close_timeout
        self._on_close = on_close
        self._nursery: trio.Nursery | None = None
        self._writing = False
        self._write_scope: trio.CancelScope | None = None
        self._close_deadline = math.inf
        self._close_sent: trio.Event | None = None
        self._drained: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.address} user={self.user_id!r}>"

    @property
    def closing(self) -> bool:
        """True once a close was requested; offers are refused from then on."""
        return self.close_code is not None

    @property
    def queued(self) -> int:
        """Frames waiting to be written to this peer's socket."""
        return len(self._queue)

    def attach(self, nursery: trio.Nursery) -> None:
        """Start writers and slow-consumer clocks in ``nursery`` (the connection's)."""
        self._nursery = nursery

    def offer(self, frame: Frame) -> bool:
        """Send or queue ``frame`` without blocking; False when the peer is closing or was just
        closed."""
        if self.close_code is not None:
            return False
        item = self._encode(frame)
        if not self._writing and not self._queue:
            taken = self._write_nowait(item)
            if taken:
                self.frames_sent += 1
                self.writes += 1
                if taken == _OWED:
                    self._start_writer()
                return True
        if self.queued_bytes + len(item) > self._max_queued_bytes:
            self.close(closecodes.SLOW_CONSUMER, "slow consumer: too much queued", flush=False)
            return False
        self.queued_bytes += len(item)
        self._queue.append(item)
        self._start_writer()
        if len(self._queue) > self._outbox_size:
            self._start_stall_clock()
        return True

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close with ``code`` after what is queued (or at once, flush=False).

        The peer leaves its rooms now; the socket gets ``close_timeout`` to take the close frame.
        """
        if self.closing:
            return
        self.close_code, self.close_reason = code, reason
        if not flush:
            self._queue.clear()
            self.queued_bytes = 0
        self._queue.append(_Close(code, reason))
        self._close_sent = trio.Event()
        self._close_deadline = trio.current_time() + self._close_timeout
        if self._write_scope is not None:
            self._write_scope.deadline = self._close_deadline
        self._check_drained()
        self._start_writer()
        if self.receiving:
            self.read_scope.cancel()
        self._on_close(self)

    async def finish(self) -> None:
        """After a close: wait until the close frame is written, at most ``close_timeout``."""
        if self._close_sent is None:
            return
        if not self._writing:  # no nursery to start a writer in: write here
            await self._write_queued()
        with trio.move_on_at(self._close_deadline):
            await self._close_sent.wait()

    def _start_writer(self) -> None:
        if self._writing or self._nursery is None:
            return
        try:
            self._nursery.start_soon(self._write_queued)
        except RuntimeError:  # the connection is ending; finish() writes the close
            return
        self._writing = True

    async def _write_queued(self) -> None:
        """Write queued frames (batched) and what the link owes, until nothing is left or a
        close frame was sent."""
        self._writing = True
        link = self._link
        try:
            with trio.CancelScope(deadline=self._close_deadline) as scope:
                self._write_scope = scope
                while self._queue or link.owes:
                    if not self._queue:
                        await link.write([])
                        continue
                    batch, size, close = self._take_batch()
                    if batch:
                        await link.write(batch)
                        self.frames_sent += len(batch)
                        self.writes += 1
                        self.queued_bytes -= size
                        self._check_drained()
                    if close is not None:
                        await link.close(close.code, close.reason)
                        break
        finally:
            self._writing = False
            self._write_scope = None
            if self._close_sent is not None and (self.closing and not self._queue_has_close()):
                self._close_sent.set()

    def _queue_has_close(self) -> bool:
        return bool(self._queue) and isinstance(self._queue[-1], _Close)

    def _take_batch(self) -> tuple[list[Frame], int, _Close | None]:
        """The first queued frame and those behind it, up to ``batch_bytes`` more."""
        batch: list[Frame] = []
        size = 0
        while self._queue:
            item = self._queue[0]
            if isinstance(item, _Close):
                self._queue.popleft()
                return batch, size, item
            if batch and size >= self._batch_bytes:
                break
            self._queue.popleft()
            batch.append(item)
            size += len(item)
            if not self._batch_bytes:
                break
        return batch, size, None

    def _check_drained(self) -> None:
        if self._drained is not None and len(self._queue) <= self._outbox_size:
            self._drained.set()
            self._drained = None

    def _start_stall_clock(self) -> None:
        if self._drained is not None or self._nursery is None:
            return
        self._drained = trio.Event()
        try:
            self._nursery.start_soon(self._watch_stall, self._drained)
        except RuntimeError:  # the connection is ending; nothing left to watch
            self._drained = None

    async def _watch_stall(self, drained: trio.Event) -> None:
        """While too many frames wait, require the socket to take one per timeout."""
        while not drained.is_set() and not self.closing:
            sent_before = self.frames_sent
            with trio.move_on_after(self._slow_consumer_timeout):
                await drained.wait()
            if not drained.is_set() and self.frames_sent == sent_before:
                self.close(closecodes.SLOW_CONSUMER, "slow consumer", flush=False)
