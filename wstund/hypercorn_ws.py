"""Two changes to Hypercorn's WebSocket stream, applied once by the daemon before it serves.

Only one case still reaches Hypercorn's ``WSStream``: a WebSocket upgrade that arrives as a
later request on a kept-alive HTTP connection Hypercorn already serves (a client or proxy that
reuses connections for upgrades; Caddy opens a fresh one, tested). Every upgrade that opens a
connection, relay, agent, tunnelled, MoosicBox or Quart's, runs on the lean lane
(wstund/transport, asgiws for the ASGI ones), which has both behaviours of its own. Taking the
kept-alive case off Hypercorn would need the request boundaries of every kept-alive connection
tracked outside Hypercorn (a guess at them would let one client's body pass for another request:
request smuggling), so the patch stays for that case alone.

* Close codes (Hypercorn issue #127): Hypercorn tells the app ``websocket.disconnect`` with 1006
  (or 1000) whatever code the peer closed with, so a relayed or tunnelled close code would be
  lost on its way in. The close reply Hypercorn sends records the peer's code; the stream's end
  reports it.
* Keepalive: one task per WebSocket pings every ``PING_INTERVAL`` seconds and drops a peer
  that sent nothing at all, not even a pong, for ``IDLE_TIMEOUT`` seconds (both attributes we
  set on Hypercorn's config, read at each step so a reload applies live). It ends with the
  socket. Hypercorn's own pinger sleeps on after a close (holding a graceful stop), and its
  ``read_timeout`` would apply to every connection, cutting callers that read a long HTTP
  response without sending anything.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import Body, Data, StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping

from .keepalive import keep_alive
from .transport.asgiws import KEEPALIVE

PING_INTERVAL = "wstund_websocket_ping_interval"  # seconds; None = no pings
IDLE_TIMEOUT = "wstund_websocket_idle_timeout"  # seconds; None = never


def configure(hyper: HypercornConfig, ping_interval: float, idle_timeout: float) -> None:
    """Set the keepalive of WebSockets on ``hyper`` (0 turns either off)."""
    hyper.websocket_ping_interval = None  # ours, not Hypercorn's (see the module docstring)
    setattr(hyper, PING_INTERVAL, ping_interval or None)
    setattr(hyper, IDLE_TIMEOUT, idle_timeout or None)


async def _keepalive(stream: WSStream, scope: trio.CancelScope) -> None:
    """Ping the peer; close the connection once it has been silent for the idle timeout.

    ``scope`` is cancelled when the stream closes, so the close itself happens outside it.
    """

    def settings() -> tuple[float | None, float | None]:
        override = getattr(stream, "_wstund_keepalive_settings", None)
        if override is not None:
            return override  # type: ignore[no-any-return]
        config = stream.config
        return getattr(config, PING_INTERVAL, None), getattr(config, IDLE_TIMEOUT, None)

    def last_heard() -> float:
        return float(stream._wstund_last_heard)  # type: ignore[attr-defined]

    async def ping() -> None:
        await stream._send_wsproto_event(Ping())

    with scope:
        await keep_alive(settings, last_heard, ping)
    if not scope.cancelled_caught:
        await stream.send(StreamClosed(stream_id=stream.stream_id))  # drops the connection


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
        elif isinstance(event, StreamClosed) and hasattr(self, "_wstund_keepalive"):
            self._wstund_keepalive.cancel()
        code = getattr(self, "_wstund_peer_close_code", None)
        if isinstance(event, StreamClosed) and code is not None and self.app_put is not None:
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": code})
            return
        await handle(self, event)

    async def patched_accept(self: WSStream, message: Any) -> None:
        if message.get(KEEPALIVE) is not None:
            ping, idle = message[KEEPALIVE]
            self._wstund_keepalive_settings = (ping or None, idle or None)  # type: ignore[attr-defined]
        await accept(self, message)
        self._wstund_last_heard = trio.current_time()  # type: ignore[attr-defined]
        self._wstund_keepalive = trio.CancelScope()  # type: ignore[attr-defined]
        self.task_group.spawn(_keepalive, self, self._wstund_keepalive)  # type: ignore[attr-defined]

    WSStream._send_wsproto_event = _send_wsproto_event  # type: ignore[method-assign]
    WSStream.handle = patched_handle  # type: ignore[method-assign]
    WSStream._accept = patched_accept  # type: ignore[method-assign]
    WSStream._wstund_patched = True  # type: ignore[attr-defined]
