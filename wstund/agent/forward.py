"""Forwarding one stream to the local app: HTTP with h11, WebSocket with trio-websocket."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio
import trio_websocket

from ..httpheaders import end_to_end, from_bytes, to_bytes
from ..tunnel.flow import frame_cost
from ..tunnel.frames import (
    Kind,
    ResponseHead,
    decode_close,
    encode,
    encode_close,
    encode_response,
    encode_response_head,
    encode_text,
    encode_window,
)
from ..tunnel.headers import WEBSOCKET_HANDSHAKE
from .local import LocalApp, LocalConnection, LocalError
from .streams import AgentStream, StreamAborted

log = logging.getLogger("wstund.agent")

Send = Callable[..., Awaitable[None]]  # send(*frames): handed over together, in order


def local_url(target: str, path: str, query: str) -> str:
    """The local URL of a tunnelled request: target base + raw path + raw query."""
    url = target.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def request_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to replay to the local app: end-to-end ones; Host becomes the local one."""
    return end_to_end(headers, also_drop=("host",))


async def _grant(send: Send, stream: AgentStream, size: int) -> None:
    credit = stream.consumed(size)
    if credit:
        await send(encode_window(stream.id, credit))


async def _send_body(send: Send, stream: AgentStream, kind: Kind, payload: bytes) -> None:
    """One BODY/TEXT frame, once the server has given credit for it."""
    await stream.credit.wait()
    stream.credit.spend(frame_cost(payload))
    await send(encode(kind, stream.id, payload))


async def forward_http(
    send: Send, stream: AgentStream, local: LocalApp, max_frame: int, whole: bool = False
) -> None:
    """Replay the request to the local app and stream the response back within the credit;
    ``whole`` (the server takes RESPONSE frames): a response whose body is all here before
    anything was sent, in one frame."""
    head = stream.head
    started = time.monotonic()
    status, sent = 0, 0
    try:
        try:
            conn, response = await _exchange(send, stream, local)
        except LocalError as exc:
            status = 502
            await send(encode_text(stream.id, Kind.ERROR, f"local app: {exc}"[:500]))
            return
        try:
            status = response.status_code
            headers = end_to_end(from_bytes(response.headers.raw_items()))
            # Frames wait while the local app's bytes are already here, and go out together:
            # a small response is one write (HEAD, BODY, END) instead of three, or one frame.
            response_head = ResponseHead(status=status, headers=headers)
            pending = [encode_response_head(stream.id, response_head)]
            unsent: list[bytes] | None = []  # the body pieces while nothing has been sent
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    if pending:
                        await send(*pending)
                        pending, unsent = [], None
                    await conn.receive()  # as it arrives (a size would batch)
                elif isinstance(event, h11.Data):
                    chunk = event.data
                    for start in range(0, len(chunk), max_frame):
                        piece = chunk[start : start + max_frame]
                        if stream.credit.available <= 0:
                            if pending:
                                await send(*pending)
                                pending, unsent = [], None
                            await stream.credit.wait()
                        stream.credit.spend(frame_cost(piece))
                        pending.append(encode(Kind.BODY, stream.id, piece))
                        if unsent is not None:
                            unsent.append(piece)
                        sent += len(piece)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed before the end: a truncated body is not an END
                    raise LocalError(f"local app closed the response early ({event!r})")
        finally:
            await local.release(conn)
        if whole and unsent is not None and len(unsent) <= 1:  # one piece: at most max_frame
            await send(encode_response(stream.id, response_head, b"".join(unsent)))
        else:
            await send(*pending, encode(Kind.END, stream.id))
    finally:
        outcome = "aborted" if stream.aborted else str(status)
        elapsed = (time.monotonic() - started) * 1000
        log.info(
            "%s %s %s %d %.0fms", head.method, _shown(head.path, head.query), outcome, sent, elapsed
        )


async def _exchange(
    send: Send, stream: AgentStream, local: LocalApp
) -> tuple[LocalConnection, h11.Response]:
    """Send the request (head as given, body as it comes) and read the response head.

    LocalError if the local app is unreachable or breaks HTTP/1.1 before its head; a request
    without a body that met a kept-alive connection the app had just closed is sent again once
    on a new connection, as an HTTP client does.
    """
    head = stream.head
    headers = to_bytes(request_headers(head.headers))
    if head.body and not any(name.lower() == b"content-length" for name, _ in headers):
        headers.append((b"transfer-encoding", b"chunked"))
    try:
        request = h11.Request(
            method=head.method.encode("latin-1", "replace"),
            target=local.target(head.path, head.query),
            headers=[(b"host", local.host_header), *headers],
        )
    except h11.LocalProtocolError as exc:
        raise LocalError(f"request not valid HTTP/1.1: {exc}") from None
    while True:
        conn = await local.connect()
        try:
            await conn.send(request)
            if head.body:
                await _pump_request_body(send, stream, conn)
            await conn.send(h11.EndOfMessage())
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Response):
                    return conn, event
                if not isinstance(event, h11.InformationalResponse):
                    raise h11.RemoteProtocolError(f"no response head ({event!r})")
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            h11.ProtocolError,
        ) as exc:
            await conn.aclose()
            if conn.reused and not head.body:
                continue
            raise LocalError(repr(exc)) from None
        except BaseException:
            await conn.aclose()
            raise


async def _pump_request_body(send: Send, stream: AgentStream, conn: LocalConnection) -> None:
    """The request body from BODY frames to the local app, granting credit back as it goes."""
    while True:
        frame = await stream.next_frame()
        if frame.kind == Kind.END:
            return
        if frame.kind == Kind.BODY and frame.payload:
            await conn.send(h11.Data(data=frame.payload))
            await _grant(send, stream, frame_cost(frame.payload))


def _shown(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


async def forward_websocket(send: Send, stream: AgentStream, target: str) -> None:
    """Open the WebSocket on the local app and carry messages both ways, with close codes."""
    head = stream.head
    url = "ws" + local_url(target, head.path, head.query)[4:]
    headers = to_bytes(
        (name, value)
        for name, value in request_headers(head.headers)
        if name.lower() not in WEBSOCKET_HANDSHAKE
    )
    started = time.monotonic()
    status = 0
    try:
        try:
            async with trio_websocket.open_websocket_url(
                url, subprotocols=head.subprotocols, extra_headers=headers
            ) as local:
                status = 101
                answer = ResponseHead(status=101, subprotocol=local.subprotocol)
                await send(encode_response_head(stream.id, answer))
                await _carry_websocket(send, stream, local)
        except trio_websocket.ConnectionRejected as exc:
            status = exc.status_code
            rejected = ResponseHead(
                status=exc.status_code,
                headers=from_bytes(exc.headers or []),
            )
            await send(encode_response_head(stream.id, rejected))
            if exc.body:
                await send(encode(Kind.BODY, stream.id, exc.body))
            await send(encode(Kind.END, stream.id))
        except (trio_websocket.HandshakeError, OSError) as exc:
            status = 502
            await send(encode_text(stream.id, Kind.ERROR, f"local app: {exc!r}"[:500]))
    finally:
        outcome = "aborted" if stream.aborted else str(status)
        elapsed = (time.monotonic() - started) * 1000
        log.info("WEBSOCKET %s %s %.0fms", _shown(head.path, head.query), outcome, elapsed)


async def _carry_websocket(
    send: Send, stream: AgentStream, local: trio_websocket.WebSocketConnection
) -> None:
    async def to_local() -> None:
        while True:
            frame = await stream.next_frame()
            if frame.kind == Kind.END:
                code, reason = decode_close(frame.payload)
                await local.aclose(code, reason)
                return
            if frame.kind in (Kind.BODY, Kind.TEXT):
                message: Any = frame.payload if frame.kind == Kind.BODY else frame.payload.decode()
                await local.send_message(message)
                await _grant(send, stream, frame_cost(frame.payload))

    async def from_local() -> None:
        while True:
            try:
                message = await local.get_message()
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else 1000
                await send(
                    encode_close(stream.id, code, (exc.reason.reason or "") if exc.reason else "")
                )
                return
            if isinstance(message, str):
                await _send_body(send, stream, Kind.TEXT, message.encode())
            else:
                await _send_body(send, stream, Kind.BODY, message)

    try:
        async with trio.open_nursery() as nursery:

            async def local_side() -> None:
                await from_local()  # ends once the local socket closed, whoever started it
                nursery.cancel_scope.cancel()

            nursery.start_soon(local_side)
            nursery.start_soon(to_local)
    except* StreamAborted:
        pass
