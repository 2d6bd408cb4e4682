"""Agent-side state of one stream (a tunnelled request): its inbox, credit both ways, abort.

Sans-I/O apart from the trio channel and cancel scope: the session's reader calls ``deliver``,
``grant`` and ``abort``; the forwarding task consumes ``next_frame`` and spends ``credit``.
"""

from __future__ import annotations

import trio

from ..tunnel.flow import ReceiveWindow, SendCredit, frame_cost
from ..tunnel.frames import Frame, FrameError, Kind, RequestHead


class StreamAborted(Exception):
    """The server gave the stream up (ABORT) or the session ended."""


class AgentStream:
    """One request from the server, forwarded to the local app by its own task."""

    def __init__(self, stream_id: int, head: RequestHead, window: int, overdraft: int) -> None:
        self.id = stream_id
        self.head = head
        self.receive_window = ReceiveWindow(window, overdraft)
        self.credit = SendCredit(window)
        self._inbox_in: trio.MemorySendChannel[Frame] | None = None
        self._inbox: trio.MemoryReceiveChannel[Frame] | None = None
        self.cancel_scope = trio.CancelScope()
        self.aborted = False

    def _open_inbox(self) -> tuple[trio.MemorySendChannel[Frame], trio.MemoryReceiveChannel[Frame]]:
        """The inbox, opened on first use: most requests (a GET) get no frame after their head,
        and a channel costs more than the rest of the stream's state together."""
        if self._inbox_in is None or self._inbox is None:
            # The credit rule bounds queued BODY/TEXT frames by the window; END/ABORT add a few.
            limit = self.receive_window.limit + 8
            self._inbox_in, self._inbox = trio.open_memory_channel[Frame](limit)
            if self.aborted:
                self._close_inbox()
        return self._inbox_in, self._inbox

    def _close_inbox(self) -> None:
        if self._inbox_in is not None and self._inbox is not None:
            self._inbox_in.close()
            self._inbox.close()

    def deliver(self, frame: Frame) -> None:
        """Queue a BODY, TEXT or END frame from the server; FrameError on a credit overrun."""
        if frame.kind in (Kind.BODY, Kind.TEXT):
            self.receive_window.received(frame_cost(frame.payload))
        inbox, _ = self._open_inbox()
        try:
            inbox.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError):
            raise FrameError(f"stream {self.id}: inbox overrun") from None

    def abort(self) -> None:
        """Stop forwarding at once: the local request is cancelled."""
        self.aborted = True
        self._close_inbox()
        self.credit.close()
        self.cancel_scope.cancel()

    async def next_frame(self) -> Frame:
        """The next frame from the server; StreamAborted once the stream is gone."""
        _, inbox = self._open_inbox()
        try:
            return await inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StreamAborted() from None

    def consumed(self, size: int) -> int:
        """The local app took ``size`` bytes of credit; the credit to grant back now (0: later)."""
        return self.receive_window.consumed(size)
