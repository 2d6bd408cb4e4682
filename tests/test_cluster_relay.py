"""Rooms shared by three wstund nodes through a real redis-server: the owner on node a,
members on b and c, every relay case as on one node."""

from __future__ import annotations

import json

import trio

from .conftest import StartNodes, connect, create_room, expect_closed, join_room, recv, send


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
