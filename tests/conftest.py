"""Fixtures: a real wstund (Hypercorn + Quart-Trio + Hub) on 127.0.0.1 with a random port."""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events as wsevents

from wstund.config import Config, validate
from wstund.daemon import Daemon
from wstund.hub import Hub

from .browser import Browser
from .browser import available as browser_available
from .redisserver import RedisServer

RECV_TIMEOUT = 5.0


def make_config(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Config:
    """A Config bound to a random loopback port, state under ``tmp_path``, plus overrides."""
    data: dict[str, Any] = {"server": {"bind": ["127.0.0.1:0"], "state_dir": str(tmp_path)}}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return validate(msgspec.convert(data, Config))


@dataclass
class RunningDaemon:
    """A daemon started by the ``start_daemon`` fixture."""

    daemon: Daemon
    port: int
    nursery: trio.Nursery

    @property
    def hub(self) -> Hub:
        return self.daemon.hub

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        """The admin token: configured, or the one the daemon made (admin.token)."""
        return self.hub.config.server.admin_token

    @property
    def admin_login_url(self) -> str:
        """The URL that logs a browser in to /admin (what the daemon logs at first start)."""
        return f"{self.url}/admin#admin_token={self.admin_token}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers that make an HTTP request an admin's."""
        return {"X-Admin-Token": self.admin_token}

    def ws_url(self, path: str = "/ws", query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


StartDaemon = Callable[..., Awaitable[RunningDaemon]]


@pytest.fixture
async def start_daemon(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """Start wstund in-process with config overrides: ``await start_daemon(relay={...})``."""
    started: list[Daemon] = []
    # The admin socket gets a short path of its own (unix socket paths are capped at 108 bytes).
    sockets = tempfile.TemporaryDirectory(prefix="wstun-")

    async def start(**overrides: dict[str, Any]) -> RunningDaemon:
        admin = {
            "socket": f"{sockets.name}/admin-{len(started)}.sock",
            **overrides.get("admin", {}),
        }
        config = make_config(tmp_path, {**overrides, "admin": admin})
        daemon = Daemon(config)
        binds = await nursery.start(daemon.run)
        started.append(daemon)
        return RunningDaemon(daemon, int(binds[0].rsplit(":", 1)[1]), nursery)

    yield start
    for daemon in started:
        daemon.stop()
    sockets.cleanup()


@pytest.fixture
async def wstund(start_daemon: StartDaemon) -> RunningDaemon:
    """A daemon on its defaults (random port)."""
    return await start_daemon()


async def connect(
    daemon: RunningDaemon, query: str = "", **kwargs: Any
) -> trio_websocket.WebSocketConnection:
    """Open a relay WebSocket; it lives until closed or until the test's nursery ends."""
    return await trio_websocket.connect_websocket_url(
        daemon.nursery, daemon.ws_url("/ws", query), **kwargs
    )


async def connect_stalled(daemon: RunningDaemon) -> trio_websocket.WebSocketConnection:
    """A relay client with a tiny receive buffer that reads only when asked (no message queue),
    so the server's writes to it block as soon as the test stops reading."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", daemon.port))
    return await trio_websocket.wrap_client_stream(
        daemon.nursery, trio.SocketStream(sock), "127.0.0.1", "/ws", message_queue_size=0
    )


async def open_raw_websocket(
    daemon: RunningDaemon, target: str
) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A client WebSocket on a raw socket that completes the handshake, then reads only when
    asked (so it never answers a ping on its own)."""
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(connection.send(wsevents.Request(host="127.0.0.1", target=target)))
    with trio.fail_after(5):
        while True:
            connection.receive_data(await stream.receive_some(65536))
            if any(isinstance(e, wsevents.AcceptConnection) for e in connection.events()):
                return stream, connection


async def send(
    ws: trio_websocket.WebSocketConnection,
    type_: str,
    payload: Any = None,
    *,
    service: str | None = None,
    msg_id: str | None = None,
) -> None:
    """Send one envelope."""
    message: dict[str, Any] = {"type": type_}
    if payload is not None:
        message["payload"] = payload
    if service is not None:
        message["service"] = service
    if msg_id is not None:
        message["id"] = msg_id
    await ws.send_message(json.dumps(message))


async def recv(ws: trio_websocket.WebSocketConnection, timeout: float = RECV_TIMEOUT) -> Any:
    """Receive one frame (JSON decoded when text); fail the test instead of hanging."""
    with trio.fail_after(timeout):
        data = await ws.get_message()
    return json.loads(data) if isinstance(data, str) else data


async def expect_closed(ws: trio_websocket.WebSocketConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes; return the close code."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code
    return None  # pragma: no cover


async def create_room(
    daemon: RunningDaemon,
    service: str = "chat",
    name: str = "Room",
    token: str | None = None,
    query: str = "",
) -> tuple[trio_websocket.WebSocketConnection, str]:
    """Connect a host and create a room; return (host socket, uuid)."""
    host = await connect(daemon, query)
    payload: dict[str, Any] = {"name": name}
    if token is not None:
        payload["token"] = token
    await send(host, "create_instance", payload, service=service, msg_id="create")
    reply = await recv(host)
    assert reply["type"] == "instance_created" and reply["payload"]["success"], reply
    return host, reply["payload"]["uuid"]


async def join_room(
    daemon: RunningDaemon,
    uuid: str,
    user_id: str,
    token: str | None = None,
    service: str = "chat",
    host: trio_websocket.WebSocketConnection | None = None,
) -> trio_websocket.WebSocketConnection:
    """Connect a member and join; when ``host`` is given, consume its client_connected."""
    member = await connect(daemon)
    payload: dict[str, Any] = {"uuid": uuid, "userId": user_id}
    if token is not None:
        payload["token"] = token
    await send(member, "join_instance", payload, service=service, msg_id=f"join-{user_id}")
    ack = await recv(member)
    assert ack["type"] == "ack" and ack["payload"]["success"], ack
    if host is not None:
        note = await recv(host)
        assert note == {
            "type": "client_connected",
            "payload": {"userId": user_id, "instanceUuid": uuid},
        }
    return member


@pytest.fixture
async def open_browser() -> AsyncIterator[Callable[..., Awaitable[Browser]]]:
    """Start headless Chromiums on demand (each its own profile); all are closed at the end."""
    if not browser_available():
        pytest.fail("Debian chromium and chromium-driver are not installed (scripts/test.sh does)")
    started: list[Browser] = []

    async def start(*, mobile: bool = False) -> Browser:
        browser = await trio.to_thread.run_sync(lambda: Browser(mobile=mobile))
        started.append(browser)
        return browser

    yield start
    for browser in started:
        await trio.to_thread.run_sync(browser.close)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped (by pid) after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


StartNodes = Callable[..., Awaitable[list[RunningDaemon]]]


@pytest.fixture
async def start_nodes(
    start_daemon: StartDaemon, redis_server: RedisServer, tmp_path: Path
) -> StartNodes:
    """Start wstund nodes ``a``, ``b``, ``c``... sharing ``redis_server``, each its own state."""

    async def start(count: int = 3, **overrides: dict[str, Any]) -> list[RunningDaemon]:
        nodes = []
        for index in range(count):
            name = "abcdefgh"[index]
            cluster = {
                "redis_url": redis_server.url,
                "node_id": name,
                "node_ttl": 3.0,
                "secret": "cluster-secret-for-tests",
            }
            nodes.append(
                await start_daemon(
                    **{
                        **overrides,
                        "server": {
                            "state_dir": str(tmp_path / name),
                            **overrides.get("server", {}),
                        },
                        "cluster": {**cluster, **overrides.get("cluster", {})},
                    }
                )
            )
        return nodes

    return start
