"""Per-stream credit windows (frames.py explains the rule), shared by the server and the agent."""

from __future__ import annotations

import trio

from .frames import FrameError


def frame_cost(payload: bytes) -> int:
    """Credit a BODY or TEXT frame uses: its length, at least 1 (empty WebSocket messages too)."""
    return max(1, len(payload))


class StreamGone(Exception):
    """The stream ended (aborted, or its session is gone) while waiting for credit."""


class SendCredit:
    """Bytes this side may still send on one stream; ``wait`` blocks while it is used up."""

    def __init__(self, initial: int) -> None:
        self.available = initial
        self._changed = trio.Event()
        self._closed = False

    def grant(self, credit: int) -> None:
        """The peer consumed ``credit`` bytes: they may be sent again."""
        self.available += credit
        self._changed.set()

    def spend(self, size: int) -> None:
        """Record a sent frame of ``size`` bytes."""
        self.available -= size

    def close(self) -> None:
        """Wake every waiter with StreamGone."""
        self._closed = True
        self._changed.set()

    async def wait(self) -> None:
        """Return once there is positive credit; StreamGone once closed."""
        while not self._closed and self.available <= 0:
            self._changed = trio.Event()
            await self._changed.wait()
        if self._closed:
            raise StreamGone()


class ReceiveWindow:
    """Sans-I/O receiver accounting: detects a peer that overruns its credit, batches grants."""

    def __init__(self, window: int, overdraft: int) -> None:
        self.window = window
        self.limit = window + overdraft
        self.outstanding = 0  # received, not yet granted back
        self._unacked = 0  # consumed, not yet granted back
        self._threshold = max(1, window // 2)

    def received(self, size: int) -> None:
        """Account for a frame arriving; FrameError when the peer sent beyond its credit."""
        self.outstanding += size
        if self.outstanding > self.limit:
            raise FrameError(
                f"peer sent {self.outstanding} bytes on a {self.window}-byte window without credit"
            )

    def consumed(self, size: int) -> int:
        """The consumer took ``size`` bytes; return the credit to grant now (0: not yet)."""
        self._unacked += size
        if self._unacked < self._threshold:
            return 0
        grant, self._unacked = self._unacked, 0
        self.outstanding -= grant
        return grant
