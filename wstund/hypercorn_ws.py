"""Two fixes to Hypercorn's WebSocket stream, applied once by the daemon before it serves.

* Close codes (Hypercorn issue #127): Hypercorn tells the app ``websocket.disconnect`` with 1006
  (or 1000) whatever code the peer closed with, so a relayed or tunnelled close code would be
  lost on its way in. The close reply Hypercorn sends records the peer's code; the stream's end
  reports it.
* Idle WebSockets: a peer that sends nothing at all, not even a pong, for ``IDLE_TIMEOUT``
  seconds (an attribute we set on Hypercorn's config) is dropped. Hypercorn's own
  ``read_timeout`` would do that for every connection, cutting callers that read a long HTTP
  response without sending anything; this applies to WebSockets only.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import Body, Data, StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

IDLE_TIMEOUT = "wstund_websocket_idle_timeout"  # seconds on Hypercorn's Config; None = never


def set_idle_timeout(hyper: HypercornConfig, seconds: float | None) -> None:
    """Drop WebSockets silent for ``seconds`` (read per check, so a reload applies live)."""
    setattr(hyper, IDLE_TIMEOUT, seconds or None)


async def _watch_idle(stream: WSStream) -> None:
    """Close the connection once its peer has been silent for the configured idle timeout."""
    while not stream.closed:
        timeout = getattr(stream.config, IDLE_TIMEOUT, None)
        if not timeout:
            await trio.sleep(1.0)  # a reload may turn it on
            continue
        silent = trio.current_time() - stream._wstund_last_heard  # type: ignore[attr-defined]
        if silent >= timeout:
            await stream.send(StreamClosed(stream_id=stream.stream_id))  # drops the connection
            return
        await trio.sleep(timeout - silent)


def apply() -> None:
    """Patch ``WSStream`` (idempotent)."""
    if getattr(WSStream, "_wstund_patched", False):
        return
    send_event = WSStream._send_wsproto_event
    handle = WSStream.handle
    accept = WSStream._accept

    async def _send_wsproto_event(self: WSStream, event: Any) -> None:
        if (
            isinstance(event, CloseConnection)
            and self.connection is not None
            and self.connection.state == ConnectionState.REMOTE_CLOSING
        ):
            self._wstund_peer_close_code = event.code  # type: ignore[attr-defined]
        await send_event(self, event)

    async def patched_handle(self: WSStream, event: Any) -> None:
        if isinstance(event, (Body, Data)):
            self._wstund_last_heard = trio.current_time()  # type: ignore[attr-defined]
        code = getattr(self, "_wstund_peer_close_code", None)
        if isinstance(event, StreamClosed) and code is not None and self.app_put is not None:
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": code})
            return
        await handle(self, event)

    async def patched_accept(self: WSStream, message: Any) -> None:
        await accept(self, message)
        self._wstund_last_heard = trio.current_time()  # type: ignore[attr-defined]
        self.task_group.spawn(_watch_idle, self)

    WSStream._send_wsproto_event = _send_wsproto_event  # type: ignore[method-assign]
    WSStream.handle = patched_handle  # type: ignore[method-assign]
    WSStream._accept = patched_accept  # type: ignore[method-assign]
    WSStream._wstund_patched = True  # type: ignore[attr-defined]
