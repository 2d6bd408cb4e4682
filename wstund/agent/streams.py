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
        # The credit rule bounds queued BODY/TEXT frames by the window; END/ABORT add a few.
        self._inbox_in, self._inbox = trio.open_memory_channel[Frame](self.receive_window.limit + 8)
        self.cancel_scope = trio.CancelScope()
        self.aborted = False

    def deliver(self, frame: Frame) -> None:
        """Queue a BODY, TEXT or END frame from the server; FrameError on a credit overrun."""
        if frame.kind in (Kind.BODY, Kind.TEXT):
            self.receive_window.received(frame_cost(frame.payload))
        try:
            self._inbox_in.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError):
            raise FrameError(f"stream {self.id}: inbox overrun") from None

    def abort(self) -> None:
        """Stop forwarding at once: the local request is cancelled."""
        self.aborted = True
        self._inbox_in.close()
        self._inbox.close()
        self.credit.close()
        self.cancel_scope.cancel()

    async def next_frame(self) -> Frame:
        """The next frame from the server; StreamAborted once the stream is gone."""
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StreamAborted() from None

    def consumed(self, size: int) -> int:
        """The local app took ``size`` bytes of credit; the credit to grant back now (0: later)."""
        return self.receive_window.consumed(size)
