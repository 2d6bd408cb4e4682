"""Rooms shared by three wstund nodes through a real redis-server: the owner on node a,
members on b and c, every relay case as on one node."""

from __future__ import annotations

import json

import trio
import trio_websocket

from wstund import closecodes

from .conftest import (
    StartNodes,
    connect,
    connect_stalled,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)


async def test_member_and_owner_traffic_across_nodes(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    carol = await join_room(c, uuid, "carol", host=host)

    # member → owner and the other members, stamped with the sender on its own node
    await send(bob, "chat", {"text": "hi"})
    stamped = {"type": "chat", "payload": {"text": "hi"}, "from": "bob"}
    assert await recv(host) == stamped
    assert await recv(carol) == stamped

    # owner → all
    await send(host, "chat", {"text": "all"})
    everyone = {"type": "chat", "payload": {"text": "all"}, "from": None}
    assert await recv(bob) == everyone
    assert await recv(carol) == everyone

    # owner → payload.to
    await send(host, "chat", {"text": "psst", "to": "carol"})
    assert (await recv(carol))["payload"] == {"text": "psst", "to": "carol"}
    await send(host, "chat", {"text": "next"})
    assert (await recv(bob))["payload"] == {"text": "next"}  # bob never saw the private one
    assert (await recv(carol))["payload"] == {"text": "next"}

    # binary frames cross unchanged
    await bob.send_message(b"\x00\x01raw")
    assert await recv(host) == b"\x00\x01raw"
    assert await recv(carol) == b"\x00\x01raw"


async def test_user_ids_are_unique_per_room_across_nodes(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a, token="t0k")
    await join_room(b, uuid, "bob", token="t0k", host=host)
    twin = await connect(c)
    await send(twin, "join_instance", {"uuid": uuid, "userId": "bob", "token": "t0k"}, msg_id=1)
    assert (await recv(twin))["payload"]["code"] == "user_id_taken"
    await send(twin, "join_instance", {"uuid": uuid, "userId": "eve", "token": "bad"}, msg_id=2)
    reply = await recv(twin)
    assert reply["payload"]["code"] == "invalid_token" and reply["id"] == 2
    await send(twin, "join_instance", {"uuid": "feedbeef", "userId": "eve"}, msg_id=3)
    assert (await recv(twin))["payload"]["code"] == "instance_not_found"


async def test_kick_and_leave_across_nodes(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    carol = await join_room(c, uuid, "carol", host=host)
    await send(host, "kick_client", {"userId": "bob"}, msg_id="k")
    assert await recv(bob) == {
        "type": "kick",
        "payload": {"reason": "kicked by host", "instanceUuid": uuid},
    }
    assert await expect_closed(bob) == 4003
    assert await recv(host) == {
        "type": "client_disconnected",
        "payload": {"userId": "bob", "instanceUuid": uuid},
        "id": "k",
    }
    await carol.aclose()
    assert await recv(host) == {
        "type": "client_disconnected",
        "payload": {"userId": "carol", "instanceUuid": uuid},
    }


async def test_room_closed_and_service_disabled_reach_other_nodes(
    start_nodes: StartNodes,
) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    carol = await join_room(c, uuid, "carol", host=host)
    host2, uuid2 = await create_room(a, service="fileshare")
    dave = await join_room(c, uuid2, "dave", service="fileshare", host=host2)
    await send(host2, "end", {})
    assert (await recv(dave))["type"] == "end"
    await host2.aclose()
    assert await recv(dave) == {
        "type": "owner_disconnected",
        "payload": {"instanceUuid": uuid2, "graceSeconds": 10.0},
    }

    a.hub.set_service_enabled("chat", False)
    destroyed = {
        "type": "instance_destroyed",
        "payload": {"uuid": uuid, "reason": "service_disabled"},
    }
    assert await recv(bob) == destroyed
    assert await recv(carol) == destroyed
    assert await expect_closed(bob) == 4004
    assert await expect_closed(carol) == 4004


async def test_list_instances_is_cluster_wide(start_nodes: StartNodes) -> None:
    a, b, c = await start_nodes(3)
    _, uuid_a = await create_room(a, name="on a")
    _, uuid_b = await create_room(b, name="on b", token="x")
    client = await connect(c)
    await send(client, "list_instances", {}, service="chat", msg_id="l")
    rooms = (await recv(client))["payload"]["instances"]
    assert [(r["uuid"], r["name"], r["hasToken"]) for r in rooms] == [
        (uuid_a, "on a", False),
        (uuid_b, "on b", True),
    ]


async def test_order_per_sender_holds_across_nodes(start_nodes: StartNodes) -> None:
    a, b = await start_nodes(2)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    for n in range(200):
        await host.send_message(json.dumps({"type": "n", "payload": n}))
    with trio.fail_after(10):
        got = [(await recv(bob))["payload"] for _ in range(200)]
    assert got == list(range(200))


async def test_clean_stop_of_the_owner_node_closes_its_rooms_elsewhere(
    start_nodes: StartNodes,
) -> None:
    a, b = await start_nodes(2)
    host, uuid = await create_room(a)
    bob = await join_room(b, uuid, "bob", host=host)
    a.daemon.stop()
    assert await recv(bob) == {
        "type": "instance_destroyed",
        "payload": {"uuid": uuid, "reason": "server_shutdown"},
    }
    assert await expect_closed(bob) == 1001  # as a member on the stopping node


async def test_a_slow_member_is_cut_on_its_own_node(start_nodes: StartNodes) -> None:
    a, b = await start_nodes(2, relay={"outbox_size": 16, "slow_consumer_timeout": 0.5})
    host, uuid = await create_room(a)
    fast = await join_room(b, uuid, "fast", host=host)
    stalled = await connect_stalled(b)
    await send(stalled, "join_instance", {"uuid": uuid, "userId": "stalled"})
    assert (await recv(stalled))["payload"]["success"] is True
    assert (await recv(host))["type"] == "client_connected"

    padding = "x" * 32 * 1024
    async with trio.open_nursery() as readers:

        async def read_fast() -> None:
            for n in range(200):
                assert (await recv(fast, timeout=30))["payload"]["n"] == n

        readers.start_soon(read_fast)
        for n in range(200):
            await send(host, "tick", {"n": n, "pad": padding})
    assert await recv(host, timeout=30) == {
        "type": "client_disconnected",
        "payload": {"userId": "stalled", "instanceUuid": uuid},
    }
    with trio.fail_after(15):
        try:
            while True:
                await stalled.get_message()
        except trio_websocket.ConnectionClosed as closed:
            assert closed.reason.code == closecodes.SLOW_CONSUMER
    drops = "wstund_slow_consumer_drops_total"
    assert b.hub.metrics.registry.get_sample_value(drops) == 1  # counted on b, its own node
    assert a.hub.metrics.registry.get_sample_value(drops) == 0


async def test_a_thousand_members_on_three_nodes_get_every_broadcast_in_order(
    start_nodes: StartNodes,
) -> None:
    # node_ttl as by default: a loaded machine may delay a heartbeat past the tests' 3 s.
    nodes = await start_nodes(
        3, server={"max_connections_per_ip": 1000}, cluster={"node_ttl": 15.0}
    )
    host, uuid = await create_room(nodes[0])
    members = []
    with trio.fail_after(120):
        for i in range(1000):
            member = await connect(nodes[i % 3])
            await send(member, "join_instance", {"uuid": uuid, "userId": f"m{i}"}, msg_id=i)
            members.append(member)
        for member in members:
            assert (await recv(member, timeout=30))["type"] == "ack"
    assert len(nodes[0].hub.instances[uuid].members) == 1000
    broadcasts = 20
    for n in range(broadcasts):
        await send(host, "tick", {"n": n})
    got: list[list[int]] = [[] for _ in members]

    async def read(index: int) -> None:
        for _ in range(broadcasts):
            got[index].append((await recv(members[index], timeout=60))["payload"]["n"])

    with trio.fail_after(120):
        async with trio.open_nursery() as readers:
            for index in range(len(members)):
                readers.start_soon(read, index)
    assert got == [list(range(broadcasts))] * len(members)


async def test_owner_reclaims_on_another_node_within_the_grace_period(
    start_nodes: StartNodes,
) -> None:
    a, b, c = await start_nodes(3)
    host = await connect(a)
    await send(host, "create_instance", {"name": "R", "token": "t"}, service="chat", msg_id="c")
    created = (await recv(host))["payload"]
    uuid, owner_key = created["uuid"], created["ownerKey"]
    bob = await join_room(c, uuid, "bob", token="t", host=host)
    carol = await join_room(a, uuid, "carol", token="t", host=host)
    await host.aclose()
    away = {"type": "owner_disconnected", "payload": {"instanceUuid": uuid, "graceSeconds": 10.0}}
    assert await recv(bob) == away and await recv(carol) == away
    await send(bob, "chat", {"text": "while away"})  # held in the room's inbox for the owner
    assert (await recv(carol))["payload"] == {"text": "while away"}

    back = await connect(b)  # the load balancer sent the owner to another node
    reclaim = {"uuid": uuid, "token": "t"}
    await send(back, "reclaim_instance", reclaim, service="chat", msg_id="r0")
    refused = await recv(back)  # another socket without the owner's proof
    assert refused["type"] == "error" and refused["payload"]["code"] == "not_owner"
    await send(back, "reclaim_instance", {**reclaim, "ownerKey": owner_key}, msg_id="r1")
    assert await recv(back) == {
        "type": "instance_reclaimed",
        "payload": {
            "success": True,
            "uuid": uuid,
            "name": "R",
            "hasToken": True,
            "userCount": 2,
            "ownerKey": owner_key,
        },
        "id": "r1",
    }
    assert await recv(back) == {"type": "chat", "payload": {"text": "while away"}, "from": "bob"}
    back_again = {"type": "owner_reconnected", "payload": {"instanceUuid": uuid}}
    assert await recv(bob) == back_again and await recv(carol) == back_again

    # The owner on b drives the room held on a: to all, to one, kick, unknown user.
    await send(back, "chat", {"text": "hi all"})
    assert (await recv(bob))["from"] is None and (await recv(carol))["from"] is None
    await send(back, "chat", {"text": "psst", "to": "bob"})
    assert (await recv(bob))["payload"] == {"text": "psst", "to": "bob"}
    await send(back, "chat", {"text": "x", "to": "nobody"}, msg_id="t")
    assert (await recv(back))["payload"]["code"] == "user_not_found"
    await send(carol, "chat", {"text": "to the owner"})
    assert (await recv(back))["payload"] == {"text": "to the owner"}
    assert (await recv(bob))["payload"] == {"text": "to the owner"}
    await send(back, "kick_client", {"userId": "carol"}, msg_id="k")
    assert (await recv(carol))["type"] == "kick"
    assert await expect_closed(carol) == 4003
    assert await recv(back) == {
        "type": "client_disconnected",
        "payload": {"userId": "carol", "instanceUuid": uuid},
        "id": "k",
    }
    await send(back, "kick_client", {"userId": "carol"}, msg_id="k2")
    assert (await recv(back))["payload"]["code"] == "user_not_found"

    # The owner drops again: the grace period starts again on the room's node.
    await back.aclose()
    assert await recv(bob) == away
    back = await connect(c)
    await send(back, "reclaim_instance", {**reclaim, "ownerKey": owner_key}, msg_id="r2")
    assert (await recv(back))["payload"]["success"] is True
    assert await recv(bob) == back_again

    # The room closes on its node: the owner on b is told and owns it no more.
    a.hub.close_instance(uuid, "closed_by_admin")
    gone = {"type": "instance_destroyed", "payload": {"uuid": uuid, "reason": "closed_by_admin"}}
    assert await recv(back) == gone and await recv(bob) == gone
    await send(back, "chat", {"text": "anyone?"}, msg_id="z")
    assert (await recv(back))["payload"]["code"] == "unknown_type"
