"""A real local HTTP app for tunnel tests: raw ASGI served by Hypercorn's trio worker on loopback.

Routes: ``/echo`` (any method: the body back, method and query in headers), ``/bytes?n=N``
(N deterministic bytes, streamed), ``/cookies`` (repeated Set-Cookie), ``/hold`` (one chunk,
then waits for the caller to go away and records it), ``/ws`` (WebSocket echo).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

CHUNK = 64 * 1024
_BLOCK = random.Random(20261123).randbytes(CHUNK)


def pattern(n: int) -> Iterator[bytes]:
    """N deterministic bytes in chunks of at most 64 KiB (each chunk differs by its index)."""
    index = 0
    while n > 0:
        size = min(CHUNK, n)
        yield index.to_bytes(8, "big") + _BLOCK[: size - 8] if size > 8 else _BLOCK[:size]
        n -= size
        index += 1


def pattern_sha256(n: int) -> str:
    """sha256 of ``pattern(n)``."""
    digest = hashlib.sha256()
    for chunk in pattern(n):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LocalApp:
    """The app's state, visible to the test: which requests were seen and which were aborted."""

    port: int = 0
    seen: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    abort_event: trio.Event = field(default_factory=trio.Event)
    holding: trio.Event = field(default_factory=trio.Event)
    ws_close_codes: list[int] = field(default_factory=list)
    ws_closed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.seen.append(path)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif path == "/echo":
            await self._echo(scope, receive, send)
        elif path == "/bytes":
            n = int(parse_qs(scope["query_string"].decode()).get("n", ["0"])[0])
            headers = [(b"content-type", b"application/octet-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in pattern(n):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/cookies":
            headers = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"cookies"})
        elif path == "/sink":
            await self._sink(receive, send)
        elif path == "/hold":
            await self._hold(receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})

    async def _echo(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [
            (b"x-method", scope["method"].encode()),
            (b"x-query", scope["query_string"]),
            (b"content-type", b"application/octet-stream"),
        ]
        for name, value in scope["headers"]:
            if name.startswith(b"x-forwarded-") or name == b"x-test":
                headers.append((b"x-saw-" + name, value))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(body)})

    async def _sink(self, receive: Any, send: Any) -> None:
        """Hash an upload as it streams in (nothing kept); answer "<size> <sha256>"."""
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{size} {digest.hexdigest()}".encode()})

    async def _hold(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        self.holding.set()
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.aborted.append("/hold")
            self.abort_event.set()
        except trio.Cancelled:
            self.aborted.append("/hold")
            self.abort_event.set()
            raise

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        if scope["path"] == "/ws-refuse":
            headers = [(b"content-type", b"text/plain"), (b"x-why", b"closed")]
            start = {"type": "websocket.http.response.start", "status": 403, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": b"no entry"})
            return
        subprotocols = scope.get("subprotocols") or []
        chosen = subprotocols[-1] if subprotocols else None  # the last offered: order matters
        await send({"type": "websocket.accept", "subprotocol": chosen})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ws_close_codes.append(int(message.get("code", 1005)))
                self.ws_closed.set()
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4321, "reason": "asked"})
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


async def start_local_app(nursery: trio.Nursery) -> LocalApp:
    """Serve a LocalApp on a random loopback port in ``nursery``."""
    app = LocalApp()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    config.accesslog = None
    binds = await nursery.start(functools.partial(serve, app, config))
    app.port = int(binds[0].rsplit(":", 1)[1])
    return app


async def _serve_forever(port: int) -> None:
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.errorlog = None
    config.accesslog = None
    await serve(LocalApp(port=port), config)


if __name__ == "__main__":  # python -m tests.localapp PORT (used by bench/tunnel.py)
    import sys

    trio.run(_serve_forever, int(sys.argv[1]))
