"""One writer task per shared socket, so a cancelled stream never tears a frame.

trio-websocket and Hypercorn write one WebSocket message in several steps; a stream whose scope
is cancelled half-way (an ABORT, a caller hanging up) leaves a partial frame on the socket and
every other stream on it breaks ("Reserved bit set unexpectedly"). Here a stream only *hands a
frame over* — a step with no await after it, so a cancellation either happens before (nothing
sent) or not at all — and the writer task, cancelled only with the whole session, writes it.
Both queues are bounded in bytes: ``send`` waits for room, ``post`` (small control frames from
sync code) reports a peer that stopped reading.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import trio

Data = str | bytes


class WriterClosed(Exception):
    """The socket's writer stopped: the session is over."""


class _Ticket:
    """A frame waiting for room in the queue, admitted in arrival order."""

    __slots__ = ("admitted", "data", "event")

    def __init__(self, data: Data) -> None:
        self.data = data
        self.admitted = False
        self.event = trio.Event()


class FrameWriter:
    """The only task writing to one socket; streams queue whole frames for it, first come
    first served (no stream starves while others keep the queue full)."""

    def __init__(
        self,
        write: Callable[[Data], Awaitable[None]],
        max_queued: int,
        max_posted: int,
        write_many: Callable[[list[Data]], Awaitable[None]] | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.max_posted = max_posted
        self.queued = 0  # bytes of data frames waiting
        self.posted = 0  # bytes of control frames waiting
        self._write = write
        self._write_many = write_many  # given: every frame queued goes in one write
        self._data: deque[Data] = deque()
        self._control: deque[Data] = deque()
        self._waiting: deque[_Ticket] = deque()
        self._ready = trio.Event()  # set when there is something to write (or on close)
        self._closed = False

    def _fits(self, data: Data) -> bool:
        return not self.queued or self.queued + len(data) <= self.max_queued

    def _enqueue(self, data: Data) -> None:
        self._data.append(data)
        self.queued += len(data)
        self._ready.set()

    def _admit(self) -> None:
        """Move waiting frames into the queue, in order, while they fit."""
        while self._waiting and self._fits(self._waiting[0].data):
            ticket = self._waiting.popleft()
            ticket.admitted = True
            self._enqueue(ticket.data)
            ticket.event.set()

    async def send(self, *frames: Data) -> None:
        """Queue frames in order, after the frames before them, once ``max_queued`` allows;
        WriterClosed once the writer is gone. Returning (or being cancelled after admission)
        means a frame will be written whole; cancelled before admission, nothing of it is
        written. Frames that fit at once are queued together (the writer may batch them)."""
        for index, data in enumerate(frames, 1):
            await self._send(data, checkpoint=index == len(frames))

    async def _send(self, data: Data, checkpoint: bool) -> None:
        if self._closed:
            raise WriterClosed()
        if not self._waiting and self._fits(data):
            self._enqueue(data)
            if checkpoint:
                await trio.lowlevel.checkpoint()
            return
        ticket = _Ticket(data)
        self._waiting.append(ticket)
        try:
            await ticket.event.wait()
        finally:
            if not ticket.admitted:
                self._waiting.remove(ticket)
        if not ticket.admitted:
            raise WriterClosed()

    def post(self, data: Data) -> bool:
        """Queue a control frame ahead of the data (sync); False when the peer has left
        ``max_posted`` bytes of them unread or the writer is gone (the caller closes)."""
        if self._closed or self.posted + len(data) > self.max_posted:
            return False
        self._control.append(data)
        self.posted += len(data)
        self._ready.set()
        return True

    def close(self) -> None:
        """Stop taking frames; waiting senders get WriterClosed."""
        self._closed = True
        self._ready.set()
        for ticket in self._waiting:
            ticket.event.set()

    def _take_all(self) -> list[Data]:
        """Every queued frame, control first, admitting waiting senders as room frees."""
        batch = list(self._control)
        self._control.clear()
        self.posted = 0
        while self._data:
            batch.extend(self._data)
            self._data.clear()
            self.queued = 0
            self._admit()  # bounded: each round admits at most max_queued bytes
            if sum(len(data) for data in batch) >= self.max_queued:
                break
        return batch

    async def run(self) -> None:
        """Write queued frames in order (control first) until cancelled or closed and empty."""
        try:
            while True:
                if self._write_many is not None and (self._control or self._data):
                    await self._write_many(self._take_all())
                    continue
                if self._control:
                    data = self._control.popleft()
                    self.posted -= len(data)
                elif self._data:
                    data = self._data.popleft()
                    self.queued -= len(data)
                    self._admit()
                elif self._closed:
                    return
                else:
                    self._ready = trio.Event()
                    await self._ready.wait()
                    continue
                await self._write(data)
        finally:
            self.close()
