"""The tunnel as an attacker sees it: encoded client ids, agent-login guessing, WebSocket
origins (from a real Chromium on another origin too)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from wstund.tunnel import frames

from .browser import Browser
from .conftest import RunningDaemon, StartDaemon
from .localapp import LocalApp, start_local_app
from .loopback import expect_login_refused, login, open_ws
from .test_tunnel_e2e import agent_for, register, run_agent

EVIL = "evil"

WS_PROBE = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(arguments[0]);
ws.onopen = () => ws.send("probe");
ws.onmessage = (event) => { done("message:" + event.data); ws.close(); };
ws.onclose = (event) => done("closed:" + event.code);
"""


async def tunnel_to(
    nursery: trio.Nursery, start_daemon: StartDaemon, **overrides: Any
) -> tuple[RunningDaemon, LocalApp]:
    """A daemon with client ``evil`` connected to a local app."""
    daemon = await start_daemon(**overrides)
    local = await start_local_app(nursery)
    secret = await register(daemon, EVIL)
    await run_agent(nursery, agent_for(daemon, secret, local, EVIL))
    return daemon, local


async def test_an_encoded_client_id_routes_as_decoded_and_the_agent_gets_that_path(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon, local = await tunnel_to(nursery, start_daemon)
    async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
        with trio.fail_after(10):
            abc = await http.get("/_t/%65vil/abc")
            echoed = await http.post("/%5Ft/%65vil/echo?x=%2F", content=b"same app")
            root = await http.get("/_t/%65vil")
            hidden_slash = await http.get("/_t/ev%2Fil/echo")
            slash_in_prefix = await http.get("/_t%2Fevil/echo")
    assert abc.status_code == 404 and abc.content == b"not here"  # the app's own 404
    assert echoed.status_code == 201 and echoed.content == b"same app"
    assert echoed.headers["x-query"] == "x=%2F"
    assert echoed.headers["x-saw-x-forwarded-prefix"] == "/_t/evil"
    assert root.status_code == 404 and root.content == b"not here"
    assert local.seen == ["/abc", "/echo", "/"]
    for refused in (hidden_slash, slash_in_prefix):
        assert refused.status_code == 400 and refused.json()["error"] == "bad_tunnel_path"
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(daemon.ws_url("/_t/%65vil/ws")) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(daemon.ws_url("/_t/ev%2Fil/ws")):
                pass
    assert rejected.value.status_code == 400
    assert local.seen == ["/abc", "/echo", "/", "/ws"]


async def test_failed_agent_logins_are_rate_limited_per_address(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon(tunnel={"auth_failures_per_minute": 2})
    secret = await register(daemon, "box")
    port = daemon.port
    for guess in ("guess-1", "guess-2"):
        await expect_login_refused("127.0.0.2", port, guess, 401)
    # The limit is reached: even the right secret waits, with a JSON reason and Retry-After.
    limited = await expect_login_refused("127.0.0.2", port, secret, 429)
    assert limited.headers["retry-after"] == "60"
    assert limited.json()["error"] == "rate_limited"
    # Another address is not held back.
    agent = await login(nursery, "127.0.0.3", port, "box", secret)
    with trio.fail_after(5):
        hello = frames.decode_control(str(await agent.get_message()))
    assert isinstance(hello, frames.Hello) and hello.client_id == "box"
    await agent.aclose()


async def test_tunnelled_websockets_honour_allowed_origins(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon, local = await tunnel_to(
        nursery,
        start_daemon,
        server={"allowed_origins": ["http://good.example"]},
        tunnel={"host_suffix": "tunnel.test"},
    )
    url = daemon.ws_url(f"/_t/{EVIL}/ws")
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[("Origin", "http://attacker.example")]
            ):
                pass
        assert rejected.value.status_code == 403
        assert json.loads(rejected.value.body or b"")["error"] == "origin_not_allowed"
        assert local.seen == []  # not a byte reached the agent
        own_host = f"{EVIL}.tunnel.test:{daemon.port}"
        for origin, host in (
            ("http://good.example", None),  # listed
            (f"http://127.0.0.1:{daemon.port}", None),  # the server's (path routing) own
            (f"http://{own_host}", own_host),  # the tunnelled app's own, by host
        ):
            resource = "/ws" if host else f"/_t/{EVIL}/ws"
            ws = await open_ws(
                nursery, "127.0.0.1", daemon.port, resource, host, {"Origin": origin}
            )
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
            await ws.aclose()
    assert local.seen == ["/ws"] * 3


async def test_a_page_on_another_origin_cannot_open_a_tunnelled_websocket(
    nursery: trio.Nursery,
    start_daemon: StartDaemon,
    open_browser: Callable[..., Awaitable[Browser]],
) -> None:
    daemon, local = await tunnel_to(
        nursery,
        start_daemon,
        server={"allowed_origins": ["http://good.example"]},
        tunnel={"host_suffix": "localhost"},  # Chromium resolves *.localhost to loopback
    )
    attacker = await start_local_app(nursery)  # any page of another origin will do
    browser = await open_browser()
    await browser.get(f"{attacker.url}/attacker-page")
    assert await browser.js_async(WS_PROBE, daemon.ws_url(f"/_t/{EVIL}/ws")) == "closed:1006"
    assert local.seen == []
    # Reached by path, the app's page is sandboxed (an opaque origin: its WebSocket says
    # "Origin: null"), so with allowed_origins set it cannot open one either.
    await browser.get(f"{daemon.url}/_t/{EVIL}/page")
    assert await browser.js_async(WS_PROBE, daemon.ws_url(f"/_t/{EVIL}/ws")) == "closed:1006"
    # Reached by host, the app is an origin of its own and gets its own WebSocket.
    own = f"{EVIL}.localhost:{daemon.port}"
    await browser.get(f"http://{own}/page")
    assert await browser.js_async(WS_PROBE, f"ws://{own}/ws") == "message:echo:probe"
    # (the browser may also ask the host-routed origin for its /favicon.ico)
    assert [p for p in local.seen if p != "/favicon.ico"] == ["/page", "/page", "/ws"]


async def test_tls_ask_approves_only_registered_client_hosts(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv"}, tunnel={"host_suffix": "T.example.com"})
    await register_with_token(daemon, "home")
    async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
        with trio.fail_after(10):
            answers = {
                domain: (await http.get("/_tunnel/tls-ask", params={"domain": domain}))
                for domain in (
                    "home.t.example.com",  # a registered client: no server token needed
                    "nobody.t.example.com",
                    "t.example.com",
                    "home.t.example.com.evil.example",
                    "x.home.t.example.com",
                    "",
                )
            }
    assert {d: r.status_code for d, r in answers.items()} == {
        "home.t.example.com": 200,
        "nobody.t.example.com": 404,
        "t.example.com": 404,
        "home.t.example.com.evil.example": 404,
        "x.home.t.example.com": 404,
        "": 404,
    }
    assert answers["home.t.example.com"].json() == {
        "domain": "home.t.example.com",
        "client": "home",
    }
    assert answers["nobody.t.example.com"].json()["error"] == "client_not_found"


async def register_with_token(daemon: RunningDaemon, client_id: str) -> None:
    headers = {"Authorization": "Bearer srv", **daemon.admin_headers}
    async with httpx.AsyncClient(headers=headers) as http:
        with trio.fail_after(5):
            added = await http.post(f"{daemon.url}/_api/tunnel/clients", json={"id": client_id})
    assert added.status_code == 201
