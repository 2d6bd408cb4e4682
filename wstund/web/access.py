"""ASGI middleware: one access line per HTTP request and per WebSocket lifetime, and the
HTTP latency histogram. Wraps the public and the admin app alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger("wstund.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unix"


def _frame_size(message: Message) -> int:
    data = message.get("bytes") or message.get("text") or b""
    return len(data)


class AccessLog:
    """Log and time every request of ``app``; ``latency`` is labelled by method and status."""

    def __init__(self, app: ASGIApp, latency: Histogram, server: str) -> None:
        self.app = app
        self.latency = latency
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "GET")
            label = method if method in _METHODS else "other"
            self.latency.labels(label, str(status or 499)).observe(elapsed)
            log.info(
                '%s "%s %s" %s %dB %.1fms',
                _client(scope),
                method,
                scope.get("path", ""),
                status or "-",
                sent,
                elapsed * 1000,
                extra={
                    "kind": "http",
                    "server": self.server,
                    "client": _client(scope),
                    "method": method,
                    "path": scope.get("path", ""),
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        received = sent = 0
        code: int | None = None
        accepted = False

        async def counting_receive() -> Message:
            nonlocal received, code
            message = await receive()
            if message["type"] == "websocket.receive":
                received += _frame_size(message)
            elif message["type"] == "websocket.disconnect" and code is None:
                code = int(message.get("code", 1005))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, code, accepted
            if message["type"] == "websocket.send":
                sent += _frame_size(message)
            elif message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and code is None:
                code = int(message.get("code", 1000))
            elif message["type"] == "websocket.http.response.start" and code is None:
                code = int(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            log_websocket(
                self.server,
                _client(scope),
                scope.get("path", ""),
                accepted=accepted,
                code=code,
                elapsed=time.perf_counter() - started,
                received=received,
                sent=sent,
            )


def log_websocket(
    server: str,
    client: str,
    path: str,
    *,
    accepted: bool,
    code: int | None,
    elapsed: float,
    received: int,
    sent: int,
) -> None:
    """The access line of one WebSocket's lifetime (Hypercorn's or the lean lane's)."""
    log.info(
        "%s WS %s %s code=%s %.3fs in=%dB out=%dB",
        client,
        path,
        "closed" if accepted else "refused",
        code if code is not None else "-",
        elapsed,
        received,
        sent,
        extra={
            "kind": "websocket",
            "server": server,
            "client": client,
            "path": path,
            "accepted": accepted,
            "close_code": code,
            "bytes_in": received,
            "bytes_out": sent,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )
