"""wstund behind a real Caddy: forwarded addresses reach limits, logs and the tunnel.

Every connection comes from loopback, so clients bind a source address of their own
(127.0.0.2, 127.0.0.3, ...): Caddy runs on 127.0.0.1 and only 127.0.0.1 is a trusted proxy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio_websocket

from wstund.agent import Agent

from .caddy import run_caddy
from .conftest import RunningDaemon, StartDaemon, expect_closed, recv, send
from .localapp import LocalApp, start_local_app
from .loopback import expect_login_refused, http_from, login, open_ws
from .test_tunnel_e2e import agent_for, register, run_agent

SPOOF = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
CLIENT = "home"


@dataclass
class Proxied:
    daemon: RunningDaemon
    port: int  # Caddy's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def proxied(start_daemon: StartDaemon, tmp_path: Path) -> AsyncIterator[Proxied]:
    daemon = await start_daemon(
        server={"trusted_proxies": ["127.0.0.1"], "max_connections_per_ip": 2},
        relay={"failed_joins_per_minute": 2},
        tunnel={"host_suffix": "tunnel.test", "auth_failures_per_minute": 2},
    )
    async with run_caddy(daemon.port, tmp_path / "caddy") as port:
        yield Proxied(daemon, port)


async def admitted(ws: trio_websocket.WebSocketConnection) -> bool:
    """Whether the relay serves this socket (it answers list_instances) or refused it (4029)."""
    try:
        await send(ws, "list_instances", service="chat", msg_id="l")
    except trio_websocket.ConnectionClosed as closed:  # the refusal came first
        assert closed.reason.code == 4029
        return False
    reply = await recv(ws)
    if reply["type"] == "instance_list":
        return True
    assert reply["payload"]["code"] == "too_many_connections", reply
    assert await expect_closed(ws) == 4029
    return False


async def test_per_address_limit_and_access_log_see_the_forwarded_client(
    nursery: trio.Nursery, proxied: Proxied, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wstund.access")
    port = proxied.port
    # Two sockets from 127.0.0.2 through Caddy fill that address's quota (2), whatever the
    # client claims to be; a third is refused, while 127.0.0.3 (same proxy) still gets in.
    first = [await open_ws(nursery, "127.0.0.2", port, headers=SPOOF) for _ in range(2)]
    assert [await admitted(ws) for ws in first] == [True, True]
    assert not await admitted(await open_ws(nursery, "127.0.0.2", port))
    other = await open_ws(nursery, "127.0.0.3", port)
    assert await admitted(other)
    # A peer that is not a trusted proxy is its own client: its X-Forwarded-For is ignored.
    direct = await open_ws(nursery, "127.0.0.4", proxied.daemon.port, headers=SPOOF)
    assert await admitted(direct)
    assert dict(proxied.daemon.hub.connections_by_address) == {
        "127.0.0.2": 2,
        "127.0.0.3": 1,
        "127.0.0.4": 1,
    }
    async with http_from("127.0.0.5") as http:
        with trio.fail_after(10):
            page = await http.get(f"{proxied.url}/libwstun.js", headers=SPOOF)
    assert page.status_code == 200
    for ws in [*first, other, direct]:
        await ws.aclose()
    with trio.fail_after(5):
        while proxied.daemon.hub.connections_by_address:  # noqa: ASYNC110
            await trio.sleep(0.02)
    lines = [r for r in caplog.records if r.name == "wstund.access"]
    http_line = next(r for r in lines if getattr(r, "path", "") == "/libwstun.js")
    assert http_line.client == "127.0.0.5"
    ws_clients = sorted(r.client for r in lines if r.kind == "websocket")
    assert ws_clients == ["127.0.0.2"] * 3 + ["127.0.0.3", "127.0.0.4"]


async def open_proxied_tunnel(nursery: trio.Nursery, proxied: Proxied) -> LocalApp:
    """A local app whose agent reaches the daemon through Caddy (its WebSocket upgrade too)."""
    local = await start_local_app(nursery)
    secret = await register(proxied.daemon, CLIENT)
    config = agent_for(proxied.daemon, secret, local, CLIENT).config
    agent = Agent(dataclasses.replace(config, server=proxied.url))
    await run_agent(nursery, agent)
    return local


async def test_tunnel_by_wildcard_host_through_caddy_forwards_the_real_client(
    nursery: trio.Nursery, proxied: Proxied
) -> None:
    local = await open_proxied_tunnel(nursery, proxied)
    host = f"{CLIENT}.tunnel.test:{proxied.port}"
    async with http_from("127.0.0.2") as http:
        with trio.fail_after(10):
            echoed = await http.post(
                f"{proxied.url}/echo", content=b"hi", headers={"Host": host, **SPOOF}
            )
    assert echoed.status_code == 201 and echoed.content == b"hi"
    assert local.seen[-1] == "/echo"
    assert echoed.headers["x-saw-x-forwarded-for"] == "127.0.0.2"
    assert echoed.headers["x-saw-x-forwarded-proto"] == "http"
    assert echoed.headers["x-saw-x-forwarded-host"] == host
    # A WebSocket to the tunnelled app, by host, through Caddy.
    ws = await open_ws(nursery, "127.0.0.2", proxied.port, "/ws", host=host)
    with trio.fail_after(5):
        await ws.send_message("through caddy")
        assert await ws.get_message() == "echo:through caddy"
    await ws.aclose()


async def test_a_direct_caller_cannot_forge_forwarded_headers_to_the_agent(
    nursery: trio.Nursery, proxied: Proxied
) -> None:
    await open_proxied_tunnel(nursery, proxied)
    async with http_from("127.0.0.3") as http:
        with trio.fail_after(10):
            echoed = await http.get(
                f"{proxied.daemon.url}/_t/{CLIENT}/echo",
                headers={**SPOOF, "X-Forwarded-Host": "bank.example", "Forwarded": "for=6.6.6.6"},
            )
    assert echoed.status_code == 201
    assert echoed.headers["x-saw-x-forwarded-for"] == "127.0.0.3"
    assert echoed.headers["x-saw-x-forwarded-proto"] == "http"
    assert echoed.headers["x-saw-x-forwarded-host"] == f"127.0.0.1:{proxied.daemon.port}"


async def test_failed_agent_logins_count_per_forwarded_address(
    nursery: trio.Nursery, proxied: Proxied
) -> None:
    secret = await register(proxied.daemon, "box")
    for guess in ("guess-1", "guess-2"):
        await expect_login_refused("127.0.0.2", proxied.port, guess, 401)
    await expect_login_refused("127.0.0.2", proxied.port, secret, 429)
    agent = await login(nursery, "127.0.0.3", proxied.port, "box", secret)  # same proxy
    with trio.fail_after(5):
        assert isinstance(await agent.get_message(), str)  # the session's hello
    await agent.aclose()


async def join_unknown_room(ws: trio_websocket.WebSocketConnection) -> str:
    """Join a room that does not exist; the code of the refusal (an error or a failed ack)."""
    await send(ws, "join_instance", {"uuid": "00000000", "userId": "u"}, service="chat")
    reply = await recv(ws)
    assert reply["type"] in ("error", "ack") and not reply["payload"].get("success"), reply
    return str(reply["payload"]["code"])


async def test_failed_joins_count_per_forwarded_address(
    nursery: trio.Nursery, proxied: Proxied
) -> None:
    guesser = await open_ws(nursery, "127.0.0.2", proxied.port)
    codes = [await join_unknown_room(guesser) for _ in range(3)]
    assert codes[:2] == codes[:1] * 2 and codes[2] == "rate_limited"
    assert await expect_closed(guesser) == 4029
    other = await open_ws(nursery, "127.0.0.3", proxied.port)  # same proxy, another client
    assert await join_unknown_room(other) == codes[0]
    await other.aclose()
