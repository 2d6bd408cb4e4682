"""The public side of the tunnel: one HTTP request at ``/_t/{client_id}/{path}`` over a stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from .asgi import Receive, Scope, Send, send_json_error
from .flow import frame_cost
from .frames import (
    Kind,
    RequestHead,
    decode_response_head,
    encode,
    encode_request_head,
    encode_window,
)
from .headers import end_to_end, forwarded_request_headers, has_request_body
from .session import SessionFull, SessionLost, Stream, TunnelSession

if TYPE_CHECKING:
    from ..hub import Hub

PREFIX = "/_t/"


def split_path(path: str) -> tuple[str, str]:
    """(client id, path at the agent) of a ``/_t/{client_id}/{path}`` request path."""
    client_id, _, rest = path[len(PREFIX) :].partition("/")
    return client_id, "/" + rest


async def _upload(
    session: TunnelSession,
    stream: Stream,
    receive: Receive,
    caller_gone: trio.CancelScope,
    body: bool,
) -> None:
    """Stream the caller's body as BODY frames within credit, then END; watch for a disconnect."""
    max_frame = session.limits.max_frame
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            caller_gone.cancel()
            return
        if not body:
            continue
        data = bytes(message.get("body", b""))
        for start in range(0, len(data), max_frame):
            chunk = data[start : start + max_frame]
            session.record.bytes_in += len(chunk)
            await stream.credit.wait()
            stream.credit.spend(frame_cost(chunk))
            await session.send(encode(Kind.BODY, stream.id, chunk))
        if not message.get("more_body", False):
            await session.send(encode(Kind.END, stream.id))
            body = False


async def proxy_http(hub: Hub, scope: Scope, receive: Receive, send: Send) -> None:
    """Carry one HTTP request to the client's agent and stream the answer back."""
    tunnels = hub.tunnels
    client_id, path = split_path(scope["path"])
    if tunnels.registry.get(client_id) is None:
        await send_json_error(
            send, 404, "client_not_found", f"no tunnel client named {client_id!r}"
        )
        return
    session = tunnels.sessions.get(client_id)
    if session is None:
        await send_json_error(
            send, 503, "client_offline", f"tunnel client {client_id!r} is not connected"
        )
        return
    try:
        stream = session.open_stream()
    except (SessionLost, SessionFull):
        await send_json_error(
            send,
            503,
            "client_unavailable",
            f"tunnel client {client_id!r} cannot take a request now",
        )
        return
    started = time.monotonic()
    status = 502
    with hub.inflight.track():
        try:
            status = await _exchange(hub, session, stream, scope, receive, send, path)
        finally:
            session.finish(stream)
            record = session.record
            record.requests += 1
            record.last_seen, record.dirty = time.time(), True
            hub.metrics.tunnel_requests.labels(str(status)).inc()
            hub.metrics.tunnel_request_seconds.observe(time.monotonic() - started)


async def _exchange(
    hub: Hub,
    session: TunnelSession,
    stream: Stream,
    scope: Scope,
    receive: Receive,
    send: Send,
    path: str,
) -> int:
    """Send the head and body, relay the response; return the status the caller saw."""
    client = scope.get("client")
    body = has_request_body(scope["headers"])
    head = RequestHead(
        method=scope["method"],
        path=bytes(scope.get("raw_path") or path.encode()).decode("latin-1")[
            len(PREFIX) + len(session.client_id) :
        ]
        or "/",
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        headers=forwarded_request_headers(
            scope["headers"],
            client_host=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            prefix=PREFIX + session.client_id,
            websocket=False,
        ),
        body=body,
    )
    with trio.CancelScope() as caller_gone:
        async with trio.open_nursery() as nursery:
            await session.send(encode_request_head(stream.id, head))
            if not body:
                await session.send(encode(Kind.END, stream.id))
            nursery.start_soon(_upload, session, stream, receive, caller_gone, body)
            status = await _relay_response(hub, session, stream, send)
            nursery.cancel_scope.cancel()
            return status
    return 499


async def _relay_response(hub: Hub, session: TunnelSession, stream: Stream, send: Send) -> int:
    """Wait for the head (504 after request_timeout), then stream BODY frames to the caller."""
    timeout = hub.config.tunnel.request_timeout
    try:
        with trio.move_on_after(timeout if timeout > 0 else float("inf")) as waited:
            frame = await stream.next_frame()
    except SessionLost:
        await send_json_error(send, 502, "agent_lost", "the tunnel agent went away")
        return 502
    if waited.cancelled_caught:
        await send_json_error(send, 504, "agent_timeout", f"no response head within {timeout:g} s")
        return 504
    if frame.kind != Kind.HEAD:
        message = frame.payload.decode(errors="replace") or "the agent gave up the request"
        await send_json_error(send, 502, "agent_error", message)
        return 502
    response = decode_response_head(frame.payload)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in end_to_end(response.headers)]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    while True:
        try:
            frame = await stream.next_frame()
        except SessionLost:
            raise  # hypercorn cuts the connection: the caller sees a truncated body
        if frame.kind == Kind.BODY:
            await send({"type": "http.response.body", "body": frame.payload, "more_body": True})
            session.record.bytes_out += len(frame.payload)
            grant = stream.window.consumed(frame_cost(frame.payload))
            if grant:
                session.post(encode_window(stream.id, grant))
        elif frame.kind == Kind.END:
            stream.finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return response.status
        else:
            raise SessionLost()
