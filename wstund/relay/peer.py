"""One relay WebSocket as the relay sees it: a bounded outbox, its sender task, its rooms.

Fan-out never blocks on a peer: ``offer`` queues without waiting. Frames go into the peer's
bounded outbox channel; when it is full they wait in an overflow and a slow-consumer clock
starts. A peer whose socket takes no frame at all for ``slow_consumer_timeout`` while frames
wait, or whose queued bytes pass ``max_queued_bytes``, is closed with 4008 — nothing is
dropped without the client being told, and a reader that keeps up with a burst is never cut.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from .. import closecodes

if TYPE_CHECKING:
    from .instance import Instance

Frame = str | bytes
SendFrame = Callable[[Frame], Awaitable[None]]
SendFrames = Callable[[list[Frame]], Awaitable[None]]
SendClose = Callable[[int, str], Awaitable[None]]

_peer_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Peer:
    """A connected relay client: owner of some rooms, or member of one."""

    def __init__(
        self,
        send: SendFrame,
        send_close: SendClose,
        *,
        address: str,
        outbox_size: int,
        slow_consumer_timeout: float,
        max_queued_bytes: int,
        close_timeout: float = 10.0,
        on_close: Callable[[Peer], None] = lambda peer: None,
        send_batch: SendFrames | None = None,
        batch_bytes: int = 0,
    ) -> None:
        self.id = next(_peer_ids)
        self.address = address
        self.owned: dict[str, Instance] = {}
        self.joined: Instance | None = None
        self.user_id: str | None = None
        # The browser key from the handshake's cookie (relay.ownership): proves room ownership.
        self.browser_key: str | None = None
        self.invalid_messages = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames_sent = 0
        self.writes = 0  # socket writes: fewer than frames_sent when queued frames were batched
        self.queued_bytes = 0
        self._send = send
        self._send_batch = send_batch
        self._batch_bytes = batch_bytes if send_batch is not None else 0
        self._send_close = send_close
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[Frame | _Close](outbox_size)
        self._overflow: deque[Frame | _Close] = deque()
        self._max_queued_bytes = max_queued_bytes
        self._slow_consumer_timeout = slow_consumer_timeout
        self._close_timeout = close_timeout
        self._on_close = on_close
        self._drained: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        # Bounds the writes once a close is requested (close_timeout), so a stuck socket ends.
        self._write_scope = trio.CancelScope()

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.address} user={self.user_id!r}>"

    @property
    def closing(self) -> bool:
        """True once a close was requested; offers are refused from then on."""
        return self.close_code is not None

    @property
    def queued(self) -> int:
        """Frames waiting to be written to this peer's socket."""
        return self._outbox_send.statistics().current_buffer_used + len(self._overflow)

    async def run(self) -> None:
        """Write queued frames to the socket until a close frame has been sent (or timed out)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with self._write_scope:
                    async for item in self._outbox_recv:
                        close = item if isinstance(item, _Close) else await self._flush(item)
                        if close is not None:
                            await self._send_close(close.code, close.reason)
                            break
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    async def _flush(self, first: Frame) -> _Close | None:
        """Write ``first`` and the frames queued behind it (up to ``batch_bytes`` more) in one
        socket write when a batch sender is available; return the close request met on the way."""
        batch, size, close = [first], len(first), None
        while size - len(first) < self._batch_bytes:
            try:
                item = self._outbox_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(item, _Close):
                close = item
                break
            batch.append(item)
            size += len(item)
        if len(batch) == 1:
            await self._send(first)
        else:
            await self._send_batch(batch)  # type: ignore[misc]
        self.frames_sent += len(batch)
        self.writes += 1
        self.queued_bytes -= size
        self._refill()
        return close

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` without blocking; False when the peer is closing or was just closed."""
        if self.closing:
            return False
        if self.queued_bytes + len(frame) > self._max_queued_bytes:
            self.close(closecodes.SLOW_CONSUMER, "slow consumer: too much queued", flush=False)
            return False
        self.queued_bytes += len(frame)
        if not self._overflow:
            try:
                self._outbox_send.send_nowait(frame)
                return True
            except trio.WouldBlock:
                self._start_stall_clock()
        self._overflow.append(frame)
        return True

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Ask the sender to close with ``code`` after what is queued (or at once, flush=False).

        The peer leaves its rooms now; the socket gets ``close_timeout`` to take the close frame.
        """
        if self.closing:
            return
        self.close_code, self.close_reason = code, reason
        if not flush:
            self._overflow.clear()
            while True:
                try:
                    self._outbox_recv.receive_nowait()
                except trio.WouldBlock:
                    break
            self.queued_bytes = 0
        self._overflow.append(_Close(code, reason))
        self._refill()
        self._write_scope.deadline = trio.current_time() + self._close_timeout
        self._on_close(self)

    def _refill(self) -> None:
        while self._overflow:
            try:
                self._outbox_send.send_nowait(self._overflow[0])
            except trio.WouldBlock:
                return
            self._overflow.popleft()
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def _start_stall_clock(self) -> None:
        if self._drained is not None or self._nursery is None:
            return
        self._drained = trio.Event()
        try:
            self._nursery.start_soon(self._watch_stall, self._drained)
        except RuntimeError:  # the sender is finishing; nothing left to watch
            pass

    async def _watch_stall(self, drained: trio.Event) -> None:
        """While frames wait in the overflow, require the socket to take one per timeout."""
        while not drained.is_set() and not self.closing:
            sent_before = self.frames_sent
            with trio.move_on_after(self._slow_consumer_timeout):
                await drained.wait()
            if not drained.is_set() and self.frames_sent == sent_before:
                self.close(closecodes.SLOW_CONSUMER, "slow consumer", flush=False)
