"""The HTTP tunnel across nodes: a request reaching a node without the agent is carried to
the node holding it, streamed both ways, authenticated with the cluster secret."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from wstund.agent import Agent, AgentConfig
from wstund.cluster.forward import HOP_HEADER, without_hop

from .conftest import RunningDaemon, StartNodes
from .localapp import pattern_sha256, start_local_app
from .loopback import http_from
from .test_tunnel_e2e import CLIENT, MB, agent_for, echo_then_close, register, run_agent


async def seen_from(node: RunningDaemon, client_id: str = CLIENT) -> None:
    """Wait until ``node`` knows which node holds the agent of ``client_id``: an agent is
    announced in Redis just after it connects, so a request at once may find no one yet."""
    assert node.hub.cluster is not None
    with trio.fail_after(10):
        while await node.hub.cluster.agent_node(client_id) is None:
            await trio.sleep(0.02)


async def test_download_and_upload_through_a_node_without_the_agent(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b, _ = await start_nodes(3)
    local = await start_local_app(nursery)
    agent_scope = await run_agent(nursery, agent_for(a, await register(a), local))
    await seen_from(b)

    n = 20 * MB
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            async with http.stream("GET", f"{b.url}/_t/{CLIENT}/bytes?n={n}") as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
        assert size == n and digest.hexdigest() == pattern_sha256(n)

        body = bytes(range(256)) * 4099
        forged = {"x-test": "kept", "x-wstund-cluster-client": "6.6.6.6"}  # ignored
        async with http_from("127.0.0.2") as caller:
            with trio.fail_after(30):
                posted = await caller.post(
                    f"{b.url}/_t/{CLIENT}/echo?x=1", content=body, headers=forged
                )
        assert posted.status_code == 201 and posted.content == body
        assert posted.headers["x-method"] == "POST" and posted.headers["x-query"] == "x=1"
        assert posted.headers["x-saw-x-test"] == "kept"
        # the caller's own address, as the node it reached saw it (not that node's)
        assert posted.headers["x-saw-x-forwarded-for"] == "127.0.0.2"

        # The agent leaves: the node that held it answers 503 through the other node.
        agent_scope.cancel()
        with trio.fail_after(10):
            while True:
                offline = await http.get(f"{b.url}/_t/{CLIENT}/echo")
                if offline.status_code != 201:
                    break
                await trio.sleep(0.05)
        assert offline.status_code == 503
        assert offline.json()["error"] == "client_offline"


async def test_node_to_node_requests_need_the_cluster_secret(start_nodes: StartNodes) -> None:
    (a,) = await start_nodes(1)
    async with httpx.AsyncClient(timeout=10) as http:
        forged = await http.get(
            f"{a.url}/_t/{CLIENT}/echo", headers={HOP_HEADER.decode(): "guessed-secret-123"}
        )
    assert forged.status_code == 403 and forged.json()["error"] == "forbidden"


def test_the_cluster_secret_never_reaches_the_agent() -> None:
    scope = {"headers": [(b"host", b"x"), (b"X-Wstund-Cluster", b"s"), (b"x-test", b"1")]}
    without_hop(scope)
    assert scope["headers"] == [(b"host", b"x"), (b"x-test", b"1")]


async def test_websocket_through_a_node_without_the_agent(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2)
    local = await start_local_app(nursery)
    await run_agent(nursery, agent_for(a, await register(a), local))
    await seen_from(b)
    url = b.ws_url(f"/_t/{CLIENT}/ws")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url, subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            assert await echo_then_close(ws) == 4321
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.aclose(4000, "bye")
        await local.ws_closed.wait()
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(b.ws_url(f"/_t/{CLIENT}/ws-refuse")):
                pass
    assert local.ws_close_codes == [4000]
    assert rejected.value.status_code == 403 and rejected.value.body == b"no entry"
    assert dict(rejected.value.headers or [])[b"x-why"] == b"closed"
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as forged:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[(HOP_HEADER, b"guessed-secret-123")]
            ):
                pass
    assert forged.value.status_code == 403


async def _connect_agent_socket(node: RunningDaemon, secret: str) -> int | None:
    """Open an agent socket for CLIENT on ``node``; the close code (or refusal status)."""
    url = node.ws_url("/_tunnel/connect", f"client_id={CLIENT}")
    headers = [(b"authorization", f"Bearer {secret}".encode())]
    with trio.fail_after(10):
        try:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                while True:
                    await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code
        except trio_websocket.ConnectionRejected as exc:
            return exc.status_code
    return None  # pragma: no cover


async def test_one_agent_per_client_id_across_nodes(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2)
    local = await start_local_app(nursery)
    secret = await register(a)
    agent = agent_for(a, secret, local)
    await run_agent(nursery, agent)
    # The same client, logging in on b (the client registry is cluster-wide).
    assert await _connect_agent_socket(b, secret) == 4009
    assert agent.online and agent.sessions == 1


async def test_a_new_agent_elsewhere_replaces_the_old_one_when_configured(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2, tunnel={"replace_existing": True})
    first_app, second_app = await start_local_app(nursery), await start_local_app(nursery)
    secret = await register(a)
    first = Agent(
        AgentConfig(
            server=a.url,
            client_id=CLIENT,
            secret=secret,
            target=first_app.url,
            backoff_initial=60,  # it would replace the new one back when it reconnects
            backoff_max=60,
        )
    )
    await run_agent(nursery, first)
    second = agent_for(b, secret, second_app)
    await run_agent(nursery, second)
    with trio.fail_after(10):
        await first.wait_offline()
    assert first.last_close is not None and first.last_close[0] == 4009
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            # a forwards to b once b's announcement is in (at once, or at b's next refresh)
            while (r := await http.get(f"{a.url}/_t/{CLIENT}/echo")).status_code == 503:
                await trio.sleep(0.1)
    assert r.status_code == 201
    assert second_app.seen == ["/echo"] and first_app.seen == []


async def test_host_routed_websocket_through_a_node_without_the_agent(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2, tunnel={"host_suffix": "tunnel.test"})
    local = await start_local_app(nursery)
    await run_agent(nursery, agent_for(a, await register(a), local))
    await seen_from(b)
    host = f"{CLIENT}.tunnel.test:{b.port}"  # the Host a browser on that name sends
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            stream = await trio.open_tcp_stream("127.0.0.1", b.port)
            ws = await trio_websocket.wrap_client_stream(
                inner, stream, host, "/ws", subprotocols=["v1", "v2"]
            )
            assert ws.subprotocol == "v2"
            await ws.send_message("hello")
            assert await ws.get_message() == "echo:hello"
            await ws.aclose(4000, "bye")
        await local.ws_closed.wait()
    assert local.ws_close_codes == [4000]
    # Over HTTP too, the name routes on the agent's node.
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            r = await http.post(f"{b.url}/echo", content=b"by host", headers={"host": host})
    assert r.status_code == 201 and r.content == b"by host"


async def test_a_carried_websocket_is_logged_with_its_callers_address(
    start_nodes: StartNodes, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """The node holding the agent logs (and limits) the caller the first node saw, not that
    node's own address; a forged client header without the cluster secret changes nothing."""
    caplog.set_level(logging.INFO, "wstund.access")
    a, b = await start_nodes(2)
    local = await start_local_app(nursery)
    await run_agent(nursery, agent_for(a, await register(a), local))
    await seen_from(b)
    path = f"/_t/{CLIENT}/ws"
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", b.port, local_address="127.0.0.2")
        ws = await trio_websocket.wrap_client_stream(nursery, stream, f"127.0.0.1:{b.port}", path)
        await ws.send_message("hello")
        assert await ws.get_message() == "echo:hello"
        await ws.aclose()
        while len(lines := _websocket_access_lines(caplog, path)) < 2:  # one per node
            await trio.sleep(0.01)
    assert [line.client for line in lines] == ["127.0.0.2", "127.0.0.2"]


def _websocket_access_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[Any]:
    return [
        r
        for r in caplog.records
        if r.name == "wstund.access" and getattr(r, "kind", "") == "websocket" and r.path == path
    ]
