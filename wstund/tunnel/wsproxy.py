"""WebSocket upgrades through the tunnel: the caller's socket carried over an agent stream.

Caller messages become BODY (binary) and TEXT frames within the stream's credit; the agent's
come back the same way. A close on either side travels as END with its code and reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from .. import closecodes
from ..httpheaders import to_bytes
from .asgi import Receive, Scope, Send, ServerWebSocket, WebSocketClosed, header
from .flow import StreamGone, frame_cost
from .frames import (
    Kind,
    decode_close,
    encode,
    encode_close,
    encode_request_head,
)
from .headers import WEBSOCKET_HANDSHAKE
from .proxy import (
    Refusal,
    Route,
    accounted,
    open_stream,
    request_head,
    response_head,
    response_headers,
)
from .session import SessionLost, Stream, TunnelSession

if TYPE_CHECKING:
    from ..hub import Hub


def origin_allowed(allowed: list[str], scope: Scope) -> bool:
    """``server.allowed_origins`` as the relay WebSocket applies it ([] or no Origin: any),
    plus the request's own origin: with host routing that is the tunnelled app's own page."""
    origin = header(scope, b"origin")
    if not allowed or origin is None or origin in allowed:
        return True
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return origin == f"{scheme}://{header(scope, b'host')}"


async def proxy_websocket(
    hub: Hub, where: Route, scope: Scope, receive: Receive, send: Send
) -> None:
    """Open the same WebSocket at the agent's local app and carry it both ways."""
    ws = ServerWebSocket(scope, receive, send)
    if not await ws.wait_connect():
        return
    if not origin_allowed(hub.config.server.allowed_origins, scope):
        origin = header(scope, b"origin")
        await ws.deny(403, "origin_not_allowed", f"origin {origin} may not open this WebSocket")
        return
    try:
        session, stream = open_stream(hub, where.client_id)
    except Refusal as refusal:
        await ws.deny(refusal.status, refusal.error, refusal.message)
        return
    head, _ = request_head(scope, where, websocket=True)
    with accounted(hub, session, stream) as status:
        try:
            await session.send(encode_request_head(stream.id, head))  # no END: END is a close
            response, _ = await response_head(hub, stream)
            # 101 accepts the upgrade; any final status refuses it with a body of its own.
            drop = WEBSOCKET_HANDSHAKE if response.status == 101 else {"content-length"}
            headers = response_headers(response, drop, upgrade=True)
        except SessionLost:
            await ws.deny(502, "agent_lost", "the tunnel agent went away")
            return
        except Refusal as refusal:
            status[0] = refusal.status
            await ws.deny(refusal.status, refusal.error, refusal.message)
            return
        status[0] = response.status
        if response.status != 101:
            limit = hub.config.tunnel.max_buffered_bytes
            await _refused(ws, session, stream, response.status, headers, limit)
            return
        await ws.accept(response.subprotocol, to_bytes(headers))
        await _carry(hub, session, stream, ws)


async def _refused(
    ws: ServerWebSocket,
    session: TunnelSession,
    stream: Stream,
    status: int,
    headers: list[tuple[str, str]],
    limit: int,
) -> None:
    """The local app refused the upgrade: give the caller its status, headers and body.

    The body is collected (a refusal cannot stream) up to ``limit`` bytes, the rest dropped.
    """
    body = b""
    try:
        while True:
            frame = await stream.next_frame()
            if frame.kind != Kind.BODY or len(body) + len(frame.payload) > limit:
                break
            body += frame.payload
            session.took(stream, frame.payload)
        stream.finished = frame.kind == Kind.END
    except SessionLost:
        pass
    await ws.respond(status, headers, body)


async def _carry(hub: Hub, session: TunnelSession, stream: Stream, ws: ServerWebSocket) -> None:
    """Pump messages both ways until either side closes or the agent goes away."""

    async def from_caller() -> None:
        while True:
            try:
                message = await ws.receive()
            except WebSocketClosed as closed:
                code = closed.code if closed.code not in (1005, 1006) else closecodes.NORMAL
                stream.finished = True  # END tells the agent to close: no ABORT needed
                await session.send(encode_close(stream.id, code))
                return
            kind, payload = (
                (Kind.TEXT, message.encode()) if isinstance(message, str) else (Kind.BODY, message)
            )
            session.record.bytes_in += len(payload)
            await stream.credit.wait()
            stream.credit.spend(frame_cost(payload))
            await session.send(encode(kind, stream.id, payload))

    async def to_caller() -> None:
        while True:
            frame = await stream.next_frame()
            if frame.kind in (Kind.BODY, Kind.TEXT):
                data = frame.payload if frame.kind == Kind.BODY else frame.payload.decode()
                await ws.send(data)
                session.took(stream, frame.payload)
            elif frame.kind == Kind.END:
                stream.finished = True
                code, reason = decode_close(frame.payload)
                await ws.close(code, reason)
                return
            else:
                raise SessionLost()

    try:
        async with trio.open_nursery() as nursery:

            async def either(side: Callable[[], Awaitable[None]]) -> None:
                await side()
                nursery.cancel_scope.cancel()

            nursery.start_soon(either, from_caller)
            nursery.start_soon(either, to_caller)
    except* (SessionLost, StreamGone):
        if hub.stopping:
            await ws.close(closecodes.GOING_AWAY, "server shutting down")
        else:
            await ws.close(closecodes.INTERNAL_ERROR, "the tunnel agent went away")
