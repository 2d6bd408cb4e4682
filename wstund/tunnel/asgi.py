"""Raw ASGI helpers: the tunnel runs ahead of Quart to stream with backpressure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..httpheaders import to_bytes
from ..transport.replay import hangup_watch, no_hold

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


async def _watch_disconnect(receive: Receive, caller_gone: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            caller_gone.cancel()
            return


@asynccontextmanager
async def hangup_scope(scope: Scope, receive: Receive) -> AsyncIterator[trio.CancelScope]:
    """A cancel scope for answering a request whose body has been read, cancelled when the
    caller hangs up: told by the connection where it can (our accept loop's connections, no
    task needed), else by a task waiting in ``receive()`` for ``http.disconnect``."""
    with trio.CancelScope() as caller_gone:
        watch = hangup_watch(scope)
        if watch is not None:
            stop_watching = watch(caller_gone.cancel)
            try:
                yield caller_gone
            finally:
                stop_watching()
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, caller_gone)
                yield caller_gone
                nursery.cancel_scope.cancel()


def json_body(error: str, message: str, **extra: Any) -> bytes:
    """The JSON error body used everywhere in wstund: ``{"error": code, "message": text}``."""
    return json.dumps({"error": error, "message": message, **extra}).encode()


async def send_whole(
    send: Send,
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    head: bool = False,
    hold: Callable[[], None] = no_hold,
) -> None:
    """Answer with ``body`` whole, its Content-Length added (``head``: a HEAD request's answer,
    the length without the body); ``hold`` (``write_hold(scope)``) lets the head and the body
    leave in one write."""
    hold()
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


async def send_json_error(
    send: Send,
    status: int,
    error: str,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    """Answer an HTTP request with a JSON error body."""
    body = json_body(error, message, **extra)
    await send_whole(send, status, [(b"content-type", b"application/json"), *headers], body)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase) in an ASGI scope, as text."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class WebSocketClosed(Exception):
    """The peer of a raw ASGI WebSocket went away."""

    def __init__(self, code: int) -> None:
        super().__init__(f"websocket closed ({code})")
        self.code = code


class ServerWebSocket:
    """The server end of one WebSocket over raw ASGI."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.accepted = False
        self.closed = False

    async def wait_connect(self) -> bool:
        """Consume ``websocket.connect``; False if the peer left before it."""
        message = await self._receive()
        return bool(message["type"] == "websocket.connect")

    async def accept(
        self, subprotocol: str | None = None, headers: RawHeaders | None = None
    ) -> None:
        """Complete the handshake."""
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = headers
        await self._send(message)
        self.accepted = True

    async def deny(self, status: int, error: str, message: str) -> None:
        """Refuse the handshake with an HTTP status and a JSON body."""
        await self.respond(
            status, [("content-type", "application/json")], json_body(error, message)
        )

    async def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Refuse the handshake with an HTTP response (close 1008 if Hypercorn cannot);
        ``headers`` are valid ones (ours, or checked by ``proxy.response_headers``)."""
        self.closed = True
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            reason = body.decode(errors="replace")[:120]
            await self._send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        raw = [*to_bytes(headers), (b"content-length", str(len(body)).encode())]
        await self._send(
            {"type": "websocket.http.response.start", "status": status, "headers": raw}
        )
        await self._send({"type": "websocket.http.response.body", "body": body})

    async def receive(self) -> str | bytes:
        """The next message; WebSocketClosed when the peer is gone."""
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        self.closed = True
        raise WebSocketClosed(int(message.get("code", 1005)))

    async def send(self, data: str | bytes) -> None:
        """Send one message (silently dropped by Hypercorn once the socket is closed)."""
        if isinstance(data, str):
            await self._send({"type": "websocket.send", "text": data})
        else:
            await self._send({"type": "websocket.send", "bytes": data})

    async def send_many(self, messages: list[str | bytes]) -> None:
        """Send several messages in order (one by one here; the lane writes them at once)."""
        for data in messages:
            await self.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` (idempotent)."""
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
