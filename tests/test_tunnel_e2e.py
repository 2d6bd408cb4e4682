"""The HTTP tunnel end to end: a real wstund, a real agent, a real local app, all on loopback."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
import trio
import trio_websocket

from wstund.agent import Agent, AgentConfig, AuthenticationFailed

from .conftest import RunningDaemon, StartDaemon
from .localapp import LocalApp, pattern, pattern_sha256, start_local_app

CLIENT = "home"
MB = 1024 * 1024


@dataclass
class Tunnel:
    daemon: RunningDaemon
    local: LocalApp
    agent: Agent
    secret: str
    scope: trio.CancelScope

    @property
    def base(self) -> str:
        return f"{self.daemon.url}/_t/{CLIENT}"


async def register(daemon: RunningDaemon, client_id: str = CLIENT) -> str:
    """Register a tunnel client over REST and return its secret."""
    async with httpx.AsyncClient(headers=daemon.admin_headers) as http:
        with trio.fail_after(5):
            r = await http.post(f"{daemon.url}/_api/tunnel/clients", json={"id": client_id})
    assert r.status_code in (200, 201), r.text
    secret: str = r.json()["secret"]
    return secret


def agent_for(
    daemon: RunningDaemon, secret: str, local: LocalApp, client_id: str = CLIENT
) -> Agent:
    config = AgentConfig(
        server=daemon.url,
        client_id=client_id,
        secret=secret,
        target=local.url,
        backoff_initial=0.05,
        backoff_max=0.3,
    )
    return Agent(config)


async def run_agent(nursery: trio.Nursery, agent: Agent) -> trio.CancelScope:
    """Run ``agent`` in its own cancel scope (cancelling it is "killing the agent")."""
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await agent.run()

    nursery.start_soon(run)
    with trio.fail_after(5):
        await agent.wait_sessions(agent.sessions + 1)
    return scope


async def open_tunnel(nursery: trio.Nursery, start_daemon: StartDaemon, **overrides: Any) -> Tunnel:
    daemon = await start_daemon(**overrides)
    local = await start_local_app(nursery)
    secret = await register(daemon)
    agent = agent_for(daemon, secret, local)
    scope = await run_agent(nursery, agent)
    return Tunnel(daemon, local, agent, secret, scope)


@pytest.fixture
async def tunnel(nursery: trio.Nursery, start_daemon: StartDaemon) -> Tunnel:
    return await open_tunnel(nursery, start_daemon)


async def test_get_post_put_binary_bodies(tunnel: Tunnel) -> None:
    body = bytes(range(256)) * 4099  # ~1 MB, every byte value
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            got = await http.get(f"{tunnel.base}/echo?a=1&a=2&b=%20x", headers={"x-test": "1"})
            posted = await http.post(f"{tunnel.base}/echo", content=body)
            put = await http.put(f"{tunnel.base}/echo?p", content=body[::-1])
            missing = await http.get(f"{tunnel.base}/nowhere")
    assert got.status_code == 201 and got.headers["x-method"] == "GET"
    assert got.headers["x-query"] == "a=1&a=2&b=%20x"
    assert got.headers["x-saw-x-test"] == "1"
    assert got.headers["x-saw-x-forwarded-for"] == "127.0.0.1"
    assert posted.status_code == 201 and posted.content == body
    assert posted.headers["x-method"] == "POST"
    assert put.content == body[::-1] and put.headers["x-method"] == "PUT"
    assert missing.status_code == 404 and missing.content == b"not here"


async def test_100_mb_streamed_download_is_identical(tunnel: Tunnel) -> None:
    n = 100 * MB
    digest = hashlib.sha256()
    size = 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            async with http.stream("GET", f"{tunnel.base}/bytes?n={n}") as response:
                assert response.status_code == 200
                assert "content-length" not in response.headers  # streamed, not buffered
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
    assert size == n
    assert digest.hexdigest() == pattern_sha256(n)


async def test_buffered_mode_content_length_and_cap(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    t = await open_tunnel(nursery, start_daemon, tunnel={"max_buffered_bytes": 300_000})
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            by_query = await http.get(f"{t.base}/bytes?n=200000&_buffer=1")
            by_header = await http.get(f"{t.base}/bytes?n=1000", headers={"x-wstun-buffer": "1"})
            over = await http.get(f"{t.base}/bytes?n=400000&_buffer=1")
    assert by_query.status_code == 200
    assert by_query.headers["content-length"] == "200000"
    assert hashlib.sha256(by_query.content).hexdigest() == pattern_sha256(200000)
    assert by_header.headers["content-length"] == "1000"
    assert over.status_code == 502
    assert "error" in over.json()


async def test_repeated_set_cookie_headers_survive(tunnel: Tunnel) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            r = await http.get(f"{tunnel.base}/cookies")
    assert r.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert len(r.headers.get_list("date")) == 1  # the daemon's, not a second one from the app
    assert r.headers.get_list("server") == ["hypercorn-h11"]  # the local app's own


async def test_header_bytes_pass_unchanged_both_ways(tunnel: Tunnel) -> None:
    # UTF-8 and latin-1 bytes in a value: carried byte for byte to the app and back.
    async with httpx.AsyncClient(timeout=10) as http:
        for value in (b"caf\xc3\xa9 \xe2\x82\xac", b"caf\xe9"):
            with trio.fail_after(10):
                r = await http.get(f"{tunnel.base}/echo", headers=[(b"x-test", value)])
            assert r.status_code == 201
            assert (b"x-saw-x-test", value) in r.headers.raw, r.headers.raw


async def test_concurrent_downloads_with_a_stalled_caller(tunnel: Tunnel) -> None:
    """19 downloads finish while one caller reads nothing; the daemon holds only its window."""
    process = psutil.Process()
    stalled_size = 300 * MB
    each = 4 * MB
    stream = await trio.open_tcp_stream("127.0.0.1", tunnel.daemon.port)
    request = f"GET /_t/{CLIENT}/bytes?n={stalled_size} HTTP/1.1\r\nHost: x\r\n\r\n"
    results: list[str] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as http:

        async def download() -> None:
            digest = hashlib.sha256()
            async with http.stream("GET", f"{tunnel.base}/bytes?n={each}") as response:
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
            results.append(digest.hexdigest())

        with trio.fail_after(60):
            await stream.send_all(request.encode())
            first = await stream.receive_some(4096)  # the head arrives; then we stop reading
            assert first.startswith(b"HTTP/1.1 200")
            rss_before = process.memory_info().rss
            async with trio.open_nursery() as n:
                for _ in range(19):
                    n.start_soon(download)
            await trio.sleep(0.5)  # give the stalled stream every chance to pile bytes up
            rss_after = process.memory_info().rss
    await stream.aclose()
    assert results == [pattern_sha256(each)] * 19
    # Unbounded buffering of the stalled stream would be ~300 MB; its window is 256 KiB plus
    # socket buffers. 64 MB leaves room for allocator noise from the 19 others.
    assert rss_after - rss_before < 64 * MB


async def test_agent_killed_mid_response_truncates_without_hanging(tunnel: Tunnel) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(15):
            async with http.stream("GET", f"{tunnel.base}/hold") as response:
                assert response.status_code == 200
                received = b""
                with pytest.raises(httpx.HTTPError):  # truncated chunked body
                    async for chunk in response.aiter_raw():
                        received += chunk
                        if received == b"first":
                            tunnel.scope.cancel()  # the agent dies
            assert received == b"first"
            offline = await http.get(f"{tunnel.base}/echo")
    assert offline.status_code in (502, 503)
    assert "error" in offline.json()


async def test_caller_disconnect_aborts_the_local_request(tunnel: Tunnel) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            async with http.stream("GET", f"{tunnel.base}/hold") as response:
                async for chunk in response.aiter_raw():
                    assert chunk == b"first"
                    break
            await tunnel.local.abort_event.wait()
    assert tunnel.local.aborted == ["/hold"]
    with trio.fail_after(5):
        while tunnel.agent.streams:
            await trio.sleep(0.01)


async def echo_then_close(ws: trio_websocket.WebSocketConnection) -> int:
    """The local app's WebSocket round: a text and a binary message echoed, then ``close``,
    which the app answers by closing with 4321; returns the close code the caller saw."""
    await ws.send_message("hello")
    assert await ws.get_message() == "echo:hello"
    await ws.send_message(b"\x00\x01\x02")
    assert await ws.get_message() == b"\x02\x01\x00"
    await ws.send_message("close")
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        await ws.get_message()
    return int(closed.value.reason.code)


async def test_websocket_echo_through_the_tunnel(tunnel: Tunnel) -> None:
    url = tunnel.daemon.ws_url(f"/_t/{CLIENT}/ws")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url) as ws:
            assert await echo_then_close(ws) == 4321


async def test_wrong_secret_unknown_id_and_duplicate_agent(tunnel: Tunnel) -> None:
    daemon, local = tunnel.daemon, tunnel.local
    with trio.fail_after(10):
        with pytest.raises(AuthenticationFailed):
            await agent_for(daemon, "wrong" + tunnel.secret, local).run()
        with pytest.raises(AuthenticationFailed):
            await agent_for(daemon, tunnel.secret, local, client_id="nobody").run()
        url = daemon.ws_url("/_tunnel/connect", f"client_id={CLIENT}")
        headers = [
            (b"authorization", f"Bearer {tunnel.secret}".encode()),
            (b"x-wstun-client-id", CLIENT.encode()),
        ]
        code = None
        try:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                while True:
                    await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code
        except trio_websocket.ConnectionRejected as exc:
            code = exc.status_code
    assert code == 4009
    assert tunnel.agent.online and tunnel.agent.sessions == 1


async def test_agent_reconnects_after_the_daemon_restarts(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    t = await open_tunnel(nursery, start_daemon)
    port = t.daemon.port
    with trio.fail_after(20):
        t.daemon.daemon.stop()
        await t.agent.wait_offline()
        again = await start_daemon(server={"bind": [f"127.0.0.1:{port}"]})
        await t.agent.wait_sessions(2)
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"{again.url}/_t/{CLIENT}/echo", content=b"after restart")
    assert r.content == b"after restart"


async def test_host_routing_reaches_the_client(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    t = await open_tunnel(nursery, start_daemon, tunnel={"host_suffix": "tunnel.test"})
    port = t.daemon.port
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            by_host = await http.post(
                f"{t.daemon.url}/echo?q=1",
                content=b"by host",
                headers={"host": f"{CLIENT}.tunnel.test:{port}"},
            )
            unknown = await http.get(t.daemon.url + "/", headers={"host": "nobody.tunnel.test"})
            own_pages = await http.get(t.daemon.url + "/", headers={"host": "tunnel.test"})
    assert by_host.status_code == 201 and by_host.content == b"by host"
    assert by_host.headers["x-query"] == "q=1"
    assert by_host.headers["x-saw-x-forwarded-host"] == f"{CLIENT}.tunnel.test:{port}"
    assert "x-saw-x-forwarded-prefix" not in by_host.headers  # the app sits at the root
    assert t.local.seen[-1] == "/echo"
    assert unknown.status_code == 404 and unknown.json()["error"] == "client_not_found"
    assert own_pages.status_code == 200 and "text/html" in own_pages.headers["content-type"]


async def test_buffered_per_client_from_config(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    t = await open_tunnel(nursery, start_daemon, tunnel={"buffered_clients": [CLIENT]})
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            r = await http.get(f"{t.base}/bytes?n=70000")
    assert r.headers["content-length"] == "70000"
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(70000)
    assert "_buffer" not in t.local.seen[-1]


async def test_websocket_subprotocol_close_codes_and_refusal(tunnel: Tunnel) -> None:
    url = tunnel.daemon.ws_url(f"/_t/{CLIENT}/ws")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url, subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
            await ws.aclose(4000, "bye")
        await tunnel.local.ws_closed.wait()
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(
                tunnel.daemon.ws_url(f"/_t/{CLIENT}/ws-refuse")
            ):
                pass
    assert tunnel.local.ws_close_codes == [4000]
    assert rejected.value.status_code == 403 and rejected.value.body == b"no entry"
    assert dict(rejected.value.headers or [])[b"x-why"] == b"closed"
    with trio.fail_after(5):
        while tunnel.agent.streams or tunnel.daemon.hub.tunnels.sessions[CLIENT].streams:
            await trio.sleep(0.01)


async def test_websocket_sees_1011_when_the_agent_dies(tunnel: Tunnel) -> None:
    url = tunnel.daemon.ws_url(f"/_t/{CLIENT}/ws")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
            tunnel.scope.cancel()  # the agent dies
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1011


async def test_unreachable_local_app_is_a_502_error(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon()
    secret = await register(daemon)
    closed_port = LocalApp(port=1)  # nothing listens on port 1 of loopback
    await run_agent(nursery, agent_for(daemon, secret, closed_port))
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            r = await http.get(f"{daemon.url}/_t/{CLIENT}/x")
    assert r.status_code == 502 and r.json()["error"] == "agent_error"
    assert "local app" in r.json()["message"]


async def test_replace_existing_agent(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(tunnel={"replace_existing": True})
    secret = await register(daemon)
    first_app, second_app = await start_local_app(nursery), await start_local_app(nursery)
    # The replaced agent waits 60 s before it reconnects (and would replace the new one back).
    first = Agent(
        AgentConfig(
            server=daemon.url,
            client_id=CLIENT,
            secret=secret,
            target=first_app.url,
            backoff_initial=60,
            backoff_max=60,
        )
    )
    await run_agent(nursery, first)
    second = agent_for(daemon, secret, second_app)
    await run_agent(nursery, second)
    with trio.fail_after(10):
        await first.wait_offline()
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{daemon.url}/_t/{CLIENT}/echo")
    assert r.status_code == 201
    assert first.last_close is not None and first.last_close[0] == 4009
    assert second_app.seen == ["/echo"] and first_app.seen == []


async def test_ten_thousand_requests_leave_nothing_behind(tunnel: Tunnel) -> None:
    hub = tunnel.daemon.hub
    session = hub.tunnels.sessions[CLIENT]
    statuses: dict[int, int] = {}

    async def worker(http: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            r = await http.get(f"{tunnel.base}/nowhere")
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(worker, http, 500)
    assert statuses == {404: 10_000}
    assert session.streams == {} and tunnel.agent.streams == {}
    assert hub.inflight.count == 0
    assert session.record.requests == 10_000
    assert session.writer.posted == 0 and session.writer.queued == 0
    assert len(session.exchanges) == 0 and session.exchanges.held == 0


async def test_a_long_response_outlives_the_websocket_idle_timeout(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """relay.idle_timeout drops silent WebSockets, never a caller reading a long response."""
    relay = {"idle_timeout": 0.3, "heartbeat_interval": 0.05}  # the agent socket answers pings
    t = await open_tunnel(nursery, start_daemon, relay=relay)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            async with http.stream("GET", f"{t.base}/hold") as response:
                chunks = response.aiter_raw()
                assert await chunks.__anext__() == b"first"
                await trio.sleep(1.0)  # the caller sends nothing meanwhile
                assert t.local.aborted == []
    await t.local.abort_event.wait()  # ended by the caller leaving, not by the daemon


async def test_100_mb_streamed_upload_reaches_the_app_intact(tunnel: Tunnel) -> None:
    """A chunked upload streams through (nothing buffers it whole) and arrives identical."""
    n = 100 * MB
    rss_before = psutil.Process().memory_info().rss

    async def body() -> Any:
        for chunk in pattern(n):
            yield chunk

    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            r = await http.post(f"{tunnel.base}/sink", content=body())
    assert r.status_code == 200
    assert r.text == f"{n} {pattern_sha256(n)}"
    # Daemon, agent, local app and caller share this process: none of them held the body.
    assert psutil.Process().memory_info().rss - rss_before < 64 * MB


async def test_tunnel_traffic_needs_no_server_token(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """The server token guards wstund's own pages, not the tunnelled app (nor the agent)."""
    daemon = await start_daemon(server={"token": "srv"})
    local = await start_local_app(nursery)
    headers = {"authorization": "Bearer srv", **daemon.admin_headers}
    async with httpx.AsyncClient(timeout=10, headers=headers) as admin:
        added = await admin.post(f"{daemon.url}/_api/tunnel/clients", json={"id": CLIENT})
    await run_agent(nursery, agent_for(daemon, added.json()["secret"], local))
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            tunnelled = await http.get(f"{daemon.url}/_t/{CLIENT}/echo")
            own_page = await http.get(f"{daemon.url}/")
    assert tunnelled.status_code == 201
    assert own_page.status_code == 401
