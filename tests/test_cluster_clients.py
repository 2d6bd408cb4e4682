"""The tunnel client registry across nodes: a client registered on one node logs in on any
node; rotation and removal apply on every node; Redis keeps only the secrets' hashes; with
Redis down a node still accepts the clients it knows."""

from __future__ import annotations

import coredis
import httpx
import trio

from wstund.agent import Agent, AgentConfig
from wstund.tunnel.registry import hash_secret

from .conftest import RedisServer, RunningDaemon, StartNodes
from .localapp import LocalApp, start_local_app
from .test_cluster_tunnel import _connect_agent_socket
from .test_tunnel_e2e import CLIENT, agent_for, register, run_agent


async def _admin(node: RunningDaemon, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(headers=node.admin_headers, timeout=10) as http:
        with trio.fail_after(10):
            return await http.request(method, f"{node.url}{path}")


def _patient_agent(node: RunningDaemon, secret: str, local: LocalApp) -> Agent:
    """An agent for CLIENT that, once closed, stays away a minute (its secret is refused)."""
    config = AgentConfig(
        server=node.url,
        client_id=CLIENT,
        secret=secret,
        target=local.url,
        backoff_initial=60,
        backoff_max=60,
    )
    return Agent(config)


async def test_registered_on_one_node_an_agent_logs_in_on_another(
    start_nodes: StartNodes, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    a, b, c = await start_nodes(3)
    local = await start_local_app(nursery)
    secret = await register(a)
    agent = _patient_agent(b, secret, local)  # registered on a, logging in on b
    agent_scope = await run_agent(nursery, agent)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            # c forwards to b once b's announcement is in (at once, or at b's next refresh)
            while (
                r := await http.post(f"{c.url}/_t/{CLIENT}/echo", content=b"hi")
            ).status_code == 503:
                await trio.sleep(0.1)
    assert r.status_code == 201 and r.content == b"hi"
    assert local.seen == ["/echo"]

    # Every node lists it; a second registration anywhere is refused.
    listed = await _admin(c, "GET", "/_api/tunnel/clients")
    assert [client["id"] for client in listed.json()["clients"]] == [CLIENT]
    async with httpx.AsyncClient(headers=c.admin_headers, timeout=10) as http:
        again = await http.post(f"{c.url}/_api/tunnel/clients", json={"id": CLIENT})
    assert again.status_code == 409 and again.json()["error"] == "client_exists"

    # Redis holds the secret's hash, never the secret.
    redis = coredis.Redis.from_url(redis_server.url, decode_responses=False)
    async with redis:
        stored = await redis.hget("wstund:clients", CLIENT)
    assert stored is not None and secret.encode() not in stored
    assert hash_secret(secret) in stored

    # Rotated through c: the agent on b is closed (4003), the old secret works nowhere.
    rotated = await _admin(c, "POST", f"/_api/tunnel/clients/{CLIENT}/rotate")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    with trio.fail_after(10):
        await agent.wait_offline()
    assert agent.last_close is not None and agent.last_close[0] == 4003
    agent_scope.cancel()
    assert await _connect_agent_socket(a, secret) == 401
    assert await _connect_agent_socket(b, secret) == 401

    # The new secret logs in on a; removed through b, the agent on a is closed and no node
    # accepts the client any more.
    second = _patient_agent(a, new_secret, local)
    second_scope = await run_agent(nursery, second)
    removed = await _admin(b, "DELETE", f"/_api/tunnel/clients/{CLIENT}")
    assert removed.status_code == 200
    with trio.fail_after(10):
        await second.wait_offline()
    assert second.last_close is not None and second.last_close[0] == 4003
    second_scope.cancel()
    for node in (a, b, c):
        assert await _connect_agent_socket(node, new_secret) == 401
    assert (await _admin(a, "GET", "/_api/tunnel/clients")).json()["clients"] == []
    assert (await _admin(b, "DELETE", f"/_api/tunnel/clients/{CLIENT}")).status_code == 404


async def test_with_redis_down_a_node_accepts_the_clients_it_knows(
    start_nodes: StartNodes, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2)
    local = await start_local_app(nursery)
    secret = await register(a)
    assert await _connect_agent_socket(b, "wrong-secret") == 401  # b looked it up in Redis

    redis_server.stop()
    agent = agent_for(b, secret, local)
    await run_agent(nursery, agent)  # b's own copy decides
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            r = await http.post(f"{b.url}/_t/{CLIENT}/echo", content=b"alone")
    assert r.status_code == 201 and r.content == b"alone"
    # Changes, made on one node alone, would differ between nodes: refused.
    async with httpx.AsyncClient(headers=b.admin_headers, timeout=10) as http:
        added = await http.post(f"{b.url}/_api/tunnel/clients", json={"id": "other"})
    assert added.status_code == 503 and added.json()["error"] == "cluster_unavailable"
    rotated = await _admin(a, "POST", f"/_api/tunnel/clients/{CLIENT}/rotate")
    assert rotated.status_code == 503 and rotated.json()["error"] == "cluster_unavailable"
    assert agent.online
