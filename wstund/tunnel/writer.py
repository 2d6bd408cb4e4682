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


class FrameWriter:
    """The only task writing to one socket; streams queue whole frames for it."""

    def __init__(
        self, write: Callable[[Data], Awaitable[None]], max_queued: int, max_posted: int
    ) -> None:
        self.max_queued = max_queued
        self.max_posted = max_posted
        self.queued = 0  # bytes of data frames waiting
        self.posted = 0  # bytes of control frames waiting
        self._write = write
        self._data: deque[Data] = deque()
        self._control: deque[Data] = deque()
        self._changed = trio.Event()
        self._closed = False

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def send(self, data: Data) -> None:
        """Queue one frame, waiting while ``max_queued`` bytes are ahead of it; WriterClosed
        once the writer is gone. Returning means the frame will be written whole."""
        while not self._closed and self.queued and self.queued + len(data) > self.max_queued:
            await self._changed.wait()
        if self._closed:
            raise WriterClosed()
        self._data.append(data)
        self.queued += len(data)
        self._wake()

    def post(self, data: Data) -> bool:
        """Queue a control frame ahead of the data (sync); False when the peer has left
        ``max_posted`` bytes of them unread or the writer is gone (the caller closes)."""
        if self._closed or self.posted + len(data) > self.max_posted:
            return False
        self._control.append(data)
        self.posted += len(data)
        self._wake()
        return True

    def close(self) -> None:
        """Stop taking frames; waiting senders get WriterClosed."""
        self._closed = True
        self._wake()

    async def run(self) -> None:
        """Write queued frames in order (control first) until cancelled or closed and empty."""
        try:
            while True:
                if self._control:
                    data = self._control.popleft()
                    self.posted -= len(data)
                elif self._data:
                    data = self._data.popleft()
                    self.queued -= len(data)
                elif self._closed:
                    return
                else:
                    await self._changed.wait()
                    continue
                self._wake()
                await self._write(data)
        finally:
            self.close()
