"""The cluster's registry in Redis, its listings, wstunctl status and /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import coredis
import httpx
import msgspec
import trio

from wstund.cluster.registry import load_node_id

from .conftest import (
    RunningDaemon,
    StartDaemon,
    StartNodes,
    connect,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)
from .redisserver import RedisServer
from .test_ops_cli import admin
from .test_ops_daemon import admin_client, samples


def test_node_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_node_id(tmp_path / "state")
    assert first.startswith("node-") and len(first) > len("node-")
    assert load_node_id(tmp_path / "state") == first
    assert (tmp_path / "state" / "node-id").read_text().strip() == first
    assert load_node_id(tmp_path / "other") != first


async def test_registry_holds_nodes_and_rooms_with_ttls(
    start_nodes: StartNodes, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(2, cluster={"node_ttl": 30.0})
    host, uuid = await create_room(a, name="reg", token="tok")
    await join_room(b, uuid, "bob", token="tok", host=host)
    async with coredis.Redis.from_url(redis_server.url) as redis:
        node_ttl = await redis.pttl("wstund:node:a")
        assert 0 < node_ttl <= 30000
        assert 0 < await redis.pttl(f"wstund:room:{uuid}") <= 30000
        assert 0 < await redis.pttl("wstund:node-rooms:a") <= 30000
        assert await redis.smembers("wstund:nodes") == {b"a", b"b"}
        entry = msgspec.msgpack.decode(await redis.get(f"wstund:room:{uuid}"))
        assert entry["node"] == "a"
        assert entry["room"]["name"] == "reg" and entry["room"]["hasToken"] is True
        assert "tok" not in json.dumps(entry)  # the token itself never leaves its node
        # A clean stop takes the node and its rooms out of the registry at once.
        a.daemon.stop()
        keys = ["wstund:node:a", "wstund:node-rooms:a", f"wstund:room:{uuid}"]
        with trio.fail_after(10):  # well inside node_ttl (30 s): removed, not expired
            while await redis.exists(keys) or b"a" in await redis.smembers("wstund:nodes"):
                await trio.sleep(0.05)


async def test_rest_listings_are_cluster_wide(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    _, uuid_a = await create_room(a, name="on a")
    _, uuid_b = await create_room(b, service="fileshare", name="on b")
    async with httpx.AsyncClient(base_url=c.url, timeout=5) as client:
        every = (await client.get("/_api/instances")).json()["instances"]
        assert [r["uuid"] for r in every] == [uuid_a, uuid_b]
        shares = (await client.get("/_api/instances/fileshare")).json()["instances"]
        assert [(r["uuid"], r["name"]) for r in shares] == [(uuid_b, "on b")]
        status = (await client.get("/chat/service/api/status")).json()
        assert [r["uuid"] for r in status["instances"]] == [uuid_a]


async def test_status_and_metrics_show_the_cluster(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a)
    await join_room(b, uuid, "bob", host=host)
    result = await admin(a, "status")
    assert result.exit_code == 0, result.output
    assert "cluster: node a, linked" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    nodes = {row[0]: row for row in rows if row and row[0] in ("a", "b", "c")}
    assert sorted(nodes) == ["a", "b", "c"]
    assert nodes["a"][1:] == [a.url, "1", "1", "1"]  # address, rooms, members, connections
    async with admin_client(a) as client:
        found = samples((await client.get("/metrics")).text)
    assert found[("wstund_cluster_linked", ())] == 1
    assert found[("wstund_cluster_remote_members", ())] == 1
    assert found[("wstund_cluster_redis_latency_seconds", ())] > 0
    assert found[("wstund_cluster_published_batches_total", ())] >= 1
    client_ws = await connect(c)
    await send(client_ws, "ping", {}, msg_id="p")
    assert (await recv(client_ws))["type"] == "pong"


async def test_redis_password_from_a_file(start_daemon: StartDaemon, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-pw", password="s3cret-redis-pw")
    server.start()
    try:
        (tmp_path / "redis.pw").write_text("s3cret-redis-pw\n")
        cluster = {"redis_url": server.url, "redis_password_file": str(tmp_path / "redis.pw")}
        a = await start_daemon(
            server={"state_dir": str(tmp_path / "a")}, cluster={**cluster, "node_id": "a"}
        )
        b = await start_daemon(
            server={"state_dir": str(tmp_path / "b")}, cluster={**cluster, "node_id": "b"}
        )
        assert a.hub.cluster is not None and a.hub.cluster.available
        host, uuid = await create_room(a)
        bob = await join_room(b, uuid, "bob", host=host)
        await send(host, "chat", {"text": "through a guarded Redis"})
        assert (await recv(bob))["payload"] == {"text": "through a guarded Redis"}
        # A wrong password: the node serves alone (its rooms work), unlinked; its id is its own.
        wrong = await start_daemon(
            server={"state_dir": str(tmp_path / "c")},
            cluster={"redis_url": server.url, "redis_password": "wrong", "request_timeout": 1.0},
        )
        assert wrong.hub.cluster is not None and not wrong.hub.cluster.available
        assert (tmp_path / "c" / "node-id").read_text().startswith("node-")
    finally:
        server.stop()


async def test_without_redis_url_there_is_no_cluster(wstund: RunningDaemon) -> None:
    assert wstund.hub.cluster is None
    async with httpx.AsyncClient(base_url=wstund.url, timeout=5) as client:
        assert "cluster" not in (await client.get("/_api/status")).json()


async def test_cluster_links_change_only_on_restart(
    start_nodes: StartNodes, tmp_path: Path
) -> None:
    (a,) = await start_nodes(1)
    running = a.hub.config.cluster.redis_url
    new = tmp_path / "new.toml"
    new.write_text('[cluster]\nredis_url = "redis://127.0.0.1:1/0"\nnode_id = "zz"\n')
    outcome = a.daemon.reload(new)
    assert {"cluster.redis_url", "cluster.node_id"} <= set(outcome.restart_needed)
    assert a.hub.config.cluster.redis_url == running and a.hub.config.cluster.node_id == "a"


async def test_an_admin_closes_a_room_through_any_node(start_nodes: StartNodes) -> None:
    a, b = await start_nodes(2)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    async with admin_client(b) as client:
        closed = await client.delete(f"/_api/instances/{uuid}")
        assert closed.status_code == 200 and closed.json() == {"success": True, "uuid": uuid}
        missing = await client.delete("/_api/instances/feedbeef")
        assert missing.status_code == 404
    gone = {"type": "instance_destroyed", "payload": {"uuid": uuid, "reason": "closed_by_admin"}}
    assert await recv(host) == gone and await recv(bob) == gone


async def test_an_admin_sees_and_kicks_through_any_node(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    carol = await join_room(c, uuid, "carol", host=host)
    async with admin_client(c) as client:
        details = await client.get(f"/_api/instances/{uuid}")
        assert details.status_code == 200
        assert details.json()["uuid"] == uuid and details.json()["members"] == ["bob", "carol"]
        assert (await client.get("/_api/instances/feedbeef")).status_code == 404

        kicked = await client.post(f"/_api/instances/{uuid}/kick", json={"userId": "bob"})
        assert kicked.status_code == 200
        assert kicked.json() == {"success": True, "userId": "bob", "instanceUuid": uuid}
        nobody = await client.post(f"/_api/instances/{uuid}/kick", json={"userId": "bob"})
        assert nobody.status_code == 404 and nobody.json()["error"] == "user_not_found"
    assert await recv(bob) == {
        "type": "kick",
        "payload": {"reason": "kicked by admin", "instanceUuid": uuid},
    }
    assert await expect_closed(bob) == 4003
    assert (await recv(host))["payload"] == {"userId": "bob", "instanceUuid": uuid}

    async with admin_client(b) as client:  # by service, the room unnamed
        kicked = await client.post("/chat/service/api/kick", json={"userId": "carol"})
        assert kicked.status_code == 200 and kicked.json()["instanceUuid"] == uuid
        nobody = await client.post("/chat/service/api/kick", json={"userId": "dave"})
        assert nobody.status_code == 404 and nobody.json()["error"] == "user_not_found"
    assert (await recv(carol))["type"] == "kick"
    assert await expect_closed(carol) == 4003


async def test_listings_and_refreshes_never_scan_the_keyspace(
    start_nodes: StartNodes, redis_server: RedisServer
) -> None:
    """Listings and node counts read the node set and each live node's room hash: with many
    other keys in Redis, no SCAN (or KEYS) runs, and a stopped node's rooms leave the listing."""
    a, b = await start_nodes(2)
    _, uuid_a = await create_room(a, name="on a")
    _, uuid_b = await create_room(b, name="on b")
    async with coredis.Redis.from_url(redis_server.url) as redis:
        await redis.mset({f"unrelated:{n}": b"x" for n in range(2000)})
        await redis.config_resetstat()
        async with httpx.AsyncClient(base_url=a.url, timeout=5) as client:
            every = (await client.get("/_api/instances")).json()["instances"]
            assert sorted(r["uuid"] for r in every) == sorted([uuid_a, uuid_b])
            assert a.hub.cluster is not None
            with trio.fail_after(10):  # a refresh (every node_ttl / 3) counts the nodes again
                a.hub.cluster.node_count = 0
                while a.hub.cluster.node_count == 0:
                    await trio.sleep(0.05)
            assert a.hub.cluster.node_count == 2
            stats = await redis.info("commandstats")
            assert not [name for name in stats if "scan" in name or name.endswith("_keys")]
            b.daemon.stop()
            with trio.fail_after(10):
                while uuid_b in [
                    r["uuid"] for r in (await client.get("/_api/instances")).json()["instances"]
                ]:
                    await trio.sleep(0.05)
