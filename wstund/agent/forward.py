"""Forwarding one stream to the local app: HTTP with httpx, WebSocket with trio-websocket."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
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
    encode_response_head,
    encode_text,
    encode_window,
)
from ..tunnel.headers import WEBSOCKET_HANDSHAKE
from .streams import AgentStream, StreamAborted

log = logging.getLogger("wstund.agent")

Send = Callable[[bytes], Awaitable[None]]


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


async def _request_body(send: Send, stream: AgentStream) -> AsyncIterator[bytes]:
    """The request body from BODY frames, granting credit back as httpx takes each chunk."""
    while True:
        frame = await stream.next_frame()
        if frame.kind == Kind.END:
            return
        if frame.kind == Kind.BODY and frame.payload:
            yield frame.payload
            await _grant(send, stream, frame_cost(frame.payload))


async def _send_body(send: Send, stream: AgentStream, kind: Kind, payload: bytes) -> None:
    """One BODY/TEXT frame, once the server has given credit for it."""
    await stream.credit.wait()
    stream.credit.spend(frame_cost(payload))
    await send(encode(kind, stream.id, payload))


async def forward_http(
    send: Send, stream: AgentStream, client: httpx.AsyncClient, target: str, max_frame: int
) -> None:
    """Replay the request to the local app and stream the response back within the credit."""
    head = stream.head
    started = time.monotonic()
    status, sent = 0, 0
    try:
        request = client.build_request(
            head.method,
            local_url(target, head.path, head.query),
            headers=to_bytes(request_headers(head.headers)),
            content=_request_body(send, stream) if head.body else None,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            status = 502
            await send(encode_text(stream.id, Kind.ERROR, f"local app: {exc!r}"[:500]))
            return
        try:
            status = response.status_code
            headers = end_to_end(from_bytes(response.headers.raw))
            await send(
                encode_response_head(stream.id, ResponseHead(status=status, headers=headers))
            )
            async for chunk in response.aiter_raw():  # as it arrives (a size would batch)
                for start in range(0, len(chunk), max_frame):
                    piece = chunk[start : start + max_frame]
                    await _send_body(send, stream, Kind.BODY, piece)
                    sent += len(piece)
        finally:
            await response.aclose()
        await send(encode(Kind.END, stream.id))
    finally:
        outcome = "aborted" if stream.aborted else str(status)
        elapsed = (time.monotonic() - started) * 1000
        log.info(
            "%s %s %s %d %.0fms", head.method, _shown(head.path, head.query), outcome, sent, elapsed
        )


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
