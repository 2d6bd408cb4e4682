"""Clients that leave from a loopback address of their choice (127.0.0.2, ...), so that one
machine can play several client addresses against the daemon or a proxy in front of it."""

from __future__ import annotations

from typing import Any

import httpx
import trio
import trio_websocket


async def open_ws(
    nursery: trio.Nursery,
    source: str,
    port: int,
    resource: str = "/ws",
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> trio_websocket.WebSocketConnection:
    """A WebSocket to 127.0.0.1:``port`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    with trio.fail_after(5):
        await sock.connect(("127.0.0.1", port))
        return await trio_websocket.wrap_client_stream(
            nursery,
            trio.SocketStream(sock),
            host or f"127.0.0.1:{port}",
            resource,
            extra_headers=list((headers or {}).items()),
        )


def http_from(source: str, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client whose connections leave from the loopback address ``source``."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=source), timeout=10, **kwargs
    )


async def login(
    nursery: trio.Nursery, source: str, port: int, client_id: str, secret: str
) -> trio_websocket.WebSocketConnection:
    """A successful agent login from ``source`` (refusals: ``expect_login_refused``)."""
    headers = {"X-Wstun-Client": client_id, "Authorization": f"Bearer {secret}"}
    return await open_ws(nursery, source, port, "/_tunnel/connect", headers=headers)


async def expect_login_refused(source: str, port: int, secret: str, status: int) -> httpx.Response:
    """An agent login handshake from ``source`` that must be refused with ``status``."""
    headers = {
        "X-Wstun-Client": "box",
        "Authorization": f"Bearer {secret}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with http_from(source) as http:
        with trio.fail_after(5):
            refused = await http.get(f"http://127.0.0.1:{port}/_tunnel/connect", headers=headers)
    assert refused.status_code == status, refused.text
    return refused
