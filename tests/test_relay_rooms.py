"""Every relay message type and its reply, over real sockets."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
import trio

from wstund import closecodes
from wstund.daemon import Daemon

from .conftest import (
    RunningDaemon,
    StartDaemon,
    connect,
    create_room,
    expect_closed,
    join_room,
    make_config,
    recv,
    send,
)


async def test_create_instance_reply_echoes_id(wstund: RunningDaemon) -> None:
    host = await connect(wstund)
    await send(host, "create_instance", {"name": "Team", "token": "pw"}, service="chat", msg_id="7")
    reply = await recv(host)
    assert reply["type"] == "instance_created" and reply["id"] == "7"
    payload = reply["payload"]
    assert payload["success"] is True and payload["name"] == "Team" and payload["hasToken"] is True
    assert len(payload["ownerKey"]) >= 32
    assert len(payload["uuid"]) == 8 and int(payload["uuid"], 16) >= 0
    assert payload["uuid"] == payload["uuid"].lower()


async def test_create_defaults_and_refusals(wstund: RunningDaemon) -> None:
    host = await connect(wstund)
    await send(host, "create_instance", service="fileshare", msg_id=1)
    reply = await recv(host)
    assert reply["payload"]["name"] == "Room" and reply["payload"]["hasToken"] is False
    assert reply["id"] == 1
    for service, code in [(None, "service_required"), ("nope", "service_not_found")]:
        await send(host, "create_instance", {"name": "x"}, service=service, msg_id="c")
        reply = await recv(host)
        assert reply["type"] == "error" and reply["id"] == "c"
        assert reply["payload"]["code"] == code
        assert reply["payload"]["error"] == reply["payload"]["message"]


async def test_join_ack_and_owner_notified(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund, name="Lobby")
    member = await connect(wstund)
    await send(member, "join_instance", {"uuid": uuid, "userId": "ann"}, service="chat", msg_id="j")
    ack = await recv(member)
    assert ack == {
        "type": "ack",
        "id": "j",
        "payload": {
            "success": True,
            "message": "Joined Lobby",
            "userId": "ann",
            "instanceUuid": uuid,
            "instanceName": "Lobby",
        },
    }
    assert await recv(host) == {
        "type": "client_connected",
        "payload": {"userId": "ann", "instanceUuid": uuid},
    }


async def test_join_without_user_id_gets_one(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    member = await connect(wstund)
    await send(member, "join_instance", {"uuid": uuid})
    ack = await recv(member)
    assert ack["payload"]["success"] and ack["payload"]["userId"].startswith("user-")


async def test_join_refusals(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund, token="secret")
    await join_room(wstund, uuid, "ann", token="secret", host=host)
    member = await connect(wstund)
    cases = [
        ({"uuid": "00000000"}, "chat", "instance_not_found"),
        ({"uuid": uuid, "token": "wrong"}, "chat", "invalid_token"),
        ({"uuid": uuid, "token": "secret"}, "fileshare", "service_mismatch"),
        ({"uuid": uuid, "token": "secret", "userId": "ann"}, "chat", "user_id_taken"),
    ]
    for payload, service, code in cases:
        await send(member, "join_instance", payload, service=service, msg_id=code)
        refusal = await recv(member)
        assert refusal["type"] == "error" and refusal["id"] == code
        assert refusal["payload"]["code"] == code
    # The refused connection is still usable.
    await send(member, "join_instance", {"uuid": uuid, "token": "secret", "userId": "bo"})
    assert (await recv(member))["payload"]["success"] is True
    await send(member, "join_instance", {"uuid": uuid, "token": "secret", "userId": "b2"})
    assert (await recv(member))["payload"]["code"] == "already_joined"


async def test_member_message_reaches_owner_and_other_members(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    raw = '{"type":"file_add","payload":{"userId":"ann","files":[1, 2]} ,"extra":true}'
    await ann.send_message(raw)
    # Byte-for-byte, not re-encoded; only the server-stamped sender is added.
    stamped = raw[:-1] + ',"from":"ann"}'
    assert await host.get_message() == stamped
    assert await bob.get_message() == stamped
    with trio.move_on_after(0.2):
        await ann.get_message()
        raise AssertionError("the sender got its own message back")


async def test_owner_broadcast_and_targeted(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    await send(host, "state_response", {"state": 1})
    assert (await recv(ann))["payload"] == {"state": 1}
    assert (await recv(bob))["payload"] == {"state": 1}
    await send(host, "state_response", {"state": 2, "to": "bob"})
    assert (await recv(bob))["payload"] == {"state": 2, "to": "bob"}
    await send(host, "state_response", {"state": 3, "to": ["ann", "bob"]})
    assert (await recv(ann))["payload"]["state"] == 3
    assert (await recv(bob))["payload"]["state"] == 3
    await send(host, "state_response", {"to": ["ann", "ghost"]}, msg_id="t")
    assert (await recv(ann))["payload"]["to"] == ["ann", "ghost"]
    error = await recv(host)
    assert error["type"] == "error" and error["id"] == "t"
    assert error["payload"]["code"] == "user_not_found" and "ghost" in error["payload"]["message"]
    # bob received nothing from the last two targeted messages meant for others
    await send(host, "ping", msg_id="p")
    assert (await recv(host))["type"] == "pong"
    with trio.move_on_after(0.2):
        extra = await recv(bob)
        raise AssertionError(f"bob got {extra}")


async def test_list_instances(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund, name="A", token="t")
    _, other = await create_room(wstund, service="fileshare", name="B")
    await join_room(wstund, uuid, "ann", token="t", host=host)
    lister = await connect(wstund)
    await send(lister, "list_instances", service="chat", msg_id="l")
    reply = await recv(lister)
    assert reply["type"] == "instance_list" and reply["id"] == "l"
    (room,) = reply["payload"]["instances"]
    assert room["uuid"] == uuid and room["service"] == "chat" and room["name"] == "A"
    assert room["hasToken"] is True and room["userCount"] == 1 and room["ownerConnected"] is True
    assert isinstance(room["createdAt"], int)
    await send(lister, "list_instances")
    uuids = {r["uuid"] for r in (await recv(lister))["payload"]["instances"]}
    assert uuids == {uuid, other}


async def test_kick_by_owner(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    await send(host, "kick_client", {"userId": "ann", "instanceUuid": uuid}, msg_id="k")
    kick = await recv(ann)
    assert kick["type"] == "kick" and kick["payload"]["reason"]
    assert await expect_closed(ann) == closecodes.KICKED
    note = await recv(host)
    assert note == {
        "type": "client_disconnected",
        "id": "k",
        "payload": {"userId": "ann", "instanceUuid": uuid},
    }
    await send(host, "kick_client", {"userId": "ann"}, msg_id="again")
    assert (await recv(host))["payload"]["code"] == "user_not_found"
    await send(host, "hello", {})
    assert (await recv(bob))["type"] == "hello"


async def test_kick_by_non_owner_refused(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    await join_room(wstund, uuid, "bob", host=host)
    other_host, _ = await create_room(wstund)
    await send(other_host, "kick_client", {"userId": "bob", "instanceUuid": uuid}, msg_id="x")
    assert (await recv(other_host))["payload"]["code"] == "not_owner"
    # A member's kick_client is not a control it may use: refused, not forwarded.
    await send(ann, "kick_client", {"userId": "bob", "instanceUuid": uuid}, msg_id="y")
    error = await recv(ann)
    assert error["type"] == "error" and error["payload"]["code"] == "not_owner"
    assert uuid in wstund.hub.instances and "bob" in wstund.hub.instances[uuid].members


async def test_member_leaving_notifies_owner(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    await ann.aclose()
    assert await recv(host) == {
        "type": "client_disconnected",
        "payload": {"userId": "ann", "instanceUuid": uuid},
    }


async def test_owner_drop_reclaim_within_grace(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"owner_grace": 5.0})
    host = await connect(daemon)
    await send(host, "create_instance", {"token": "pw"}, service="chat")
    created = (await recv(host))["payload"]
    uuid, owner_key = created["uuid"], created["ownerKey"]
    ann = await join_room(daemon, uuid, "ann", token="pw", host=host)
    await host.aclose()
    away = await recv(ann)
    assert away["type"] == "owner_disconnected" and away["payload"]["instanceUuid"] == uuid
    # While the owner is away joins are refused, and ann's messages wait in the inbox.
    late = await connect(daemon)
    await send(late, "join_instance", {"uuid": uuid, "token": "pw"})
    assert (await recv(late))["payload"]["code"] == "owner_away"
    await send(ann, "chat_message", {"text": "anyone?"})
    back = await connect(daemon)
    await send(back, "reclaim_instance", {"uuid": uuid, "token": "wrong"}, service="chat")
    assert (await recv(back))["payload"]["code"] == "invalid_token"
    reclaim = {"uuid": uuid, "token": "pw", "ownerKey": owner_key}
    await send(back, "reclaim_instance", reclaim, service="chat", msg_id="r")
    reply = await recv(back)
    assert reply == {
        "type": "instance_reclaimed",
        "id": "r",
        "payload": {
            "success": True,
            "uuid": uuid,
            "name": "Room",
            "hasToken": True,
            "userCount": 1,
            "ownerKey": owner_key,
        },
    }
    assert (await recv(back))["payload"] == {"text": "anyone?"}
    assert (await recv(ann))["type"] == "owner_reconnected"
    await send(back, "chat_message", {"text": "here"})
    assert (await recv(ann))["payload"] == {"text": "here"}


async def test_owner_drop_after_grace_destroys(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"owner_grace": 0.3})
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    await host.aclose()
    assert (await recv(ann))["type"] == "owner_disconnected"
    destroyed = await recv(ann)
    assert destroyed == {
        "type": "instance_destroyed",
        "payload": {"uuid": uuid, "reason": "owner_gone"},
    }
    assert await expect_closed(ann) == closecodes.ROOM_CLOSED
    back = await connect(daemon)
    await send(back, "reclaim_instance", {"uuid": uuid}, service="chat")
    reply = await recv(back)
    assert reply["type"] == "error" and reply["payload"]["code"] == "instance_not_found"
    assert reply["payload"]["message"] == "Instance not found"


async def test_reclaim_while_owner_connected_refused(wstund: RunningDaemon) -> None:
    host = await connect(wstund)
    await send(host, "create_instance", service="chat")
    created = (await recv(host))["payload"]
    thief = await connect(wstund)
    await send(thief, "reclaim_instance", {"uuid": created["uuid"]}, service="chat")
    assert (await recv(thief))["payload"]["code"] == "not_owner"
    # Even with the proof, a connected owner keeps the room: the reference's typed refusal.
    reclaim = {"uuid": created["uuid"], "ownerKey": created["ownerKey"]}
    await send(thief, "reclaim_instance", reclaim, service="chat")
    reply = await recv(thief)
    assert reply["type"] == "instance_reclaimed" and reply["payload"]["success"] is False
    assert reply["payload"]["code"] == "owner_connected" and reply["payload"]["error"]


async def test_host_of_several_rooms_names_the_room(wstund: RunningDaemon) -> None:
    host = await connect(wstund)
    uuids = []
    for name in ("a", "b"):
        await send(host, "create_instance", {"name": name}, service="chat")
        uuids.append((await recv(host))["payload"]["uuid"])
    ann = await join_room(wstund, uuids[1], "ann", host=host)
    await send(host, "note", {"x": 1}, msg_id="n")
    assert (await recv(host))["payload"]["code"] == "instance_required"
    await send(host, "note", {"x": 2, "instanceUuid": uuids[1]})
    assert (await recv(ann))["payload"] == {"x": 2, "instanceUuid": uuids[1]}


async def test_binary_frames_in_a_room(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    ann = await join_room(wstund, uuid, "ann", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    await ann.send_message(b"\x01bytes")
    assert await host.get_message() == b"\x01bytes"
    assert await bob.get_message() == b"\x01bytes"
    await host.send_message(b"\x02back")
    assert await ann.get_message() == b"\x02back"


async def test_cancelled_daemon_ends_owner_sockets_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon cancelled from outside (no SIGTERM drain) closes a room owner's socket without a
    handler error: a room whose task tree has ended starts no grace timer."""
    with tempfile.TemporaryDirectory(prefix="wstun-") as sockets:
        config = make_config(tmp_path, {"admin": {"socket": f"{sockets}/admin.sock"}})
        daemon = Daemon(config)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(daemon.run)
                running = RunningDaemon(daemon, int(binds[0].rsplit(":", 1)[1]), nursery)
                for _ in range(5):
                    await create_room(running)
                nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() + str(r.exc_info) for r in errors]
