"""Give ASGI apps the close code a WebSocket peer sent (Hypercorn issue #127).

Hypercorn 0.17/0.18 tell the app ``websocket.disconnect`` with 1006 (or 1000) whatever code the
peer closed with, so a tunnelled or relayed close code would be lost on its way in. This wraps
two methods of Hypercorn's ``WSStream``: the close reply it sends records the peer's code, and
the stream's end reports that code. Applied once, by the daemon, before it serves.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

_ATTRIBUTE = "_wstund_peer_close_code"


def apply() -> None:
    """Patch ``WSStream`` (idempotent)."""
    if getattr(WSStream, "_wstund_patched", False):
        return
    send_event = WSStream._send_wsproto_event
    handle = WSStream.handle

    async def _send_wsproto_event(self: WSStream, event: Any) -> None:
        if (
            isinstance(event, CloseConnection)
            and self.connection is not None
            and self.connection.state == ConnectionState.REMOTE_CLOSING
        ):
            setattr(self, _ATTRIBUTE, event.code)  # the reply echoes the peer's code
        await send_event(self, event)

    async def patched_handle(self: WSStream, event: Any) -> None:
        code = getattr(self, _ATTRIBUTE, None)
        if isinstance(event, StreamClosed) and code is not None and self.app_put is not None:
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": code})
            return
        await handle(self, event)

    WSStream._send_wsproto_event = _send_wsproto_event  # type: ignore[method-assign]
    WSStream.handle = patched_handle  # type: ignore[method-assign]
    WSStream._wstund_patched = True  # type: ignore[attr-defined]
