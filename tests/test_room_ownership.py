"""A room stays with its owner, and members cannot pose as each other (reclaim proof, sender
stamp), replayed with the frames the reference library sends."""

from __future__ import annotations

import json
from typing import Any

import trio_websocket

from wstund.relay import ownership

from .conftest import RunningDaemon, StartDaemon, connect, join_room, recv, send


def _cookie(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Cookie", f"{ownership.COOKIE_NAME}={key}".encode())]


async def _create(
    daemon: RunningDaemon, token: str | None = None, **kwargs: Any
) -> tuple[trio_websocket.WebSocketConnection, dict[str, Any]]:
    """Create a room exactly as the reference InstanceHost does; return (socket, payload)."""
    host = await connect(daemon, **kwargs)
    payload = {"name": "Room", "token": token, "server_token": None}
    await host.send_message(
        json.dumps({"type": "create_instance", "service": "chat", "payload": payload})
    )
    created = await recv(host)
    assert created["type"] == "instance_created", created
    return host, created["payload"]


async def _reclaim(daemon: RunningDaemon, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A fresh socket sends the reference reclaim frame; the reply."""
    ws = await connect(daemon, **kwargs)
    frame = {"type": "reclaim_instance", "service": "chat", "payload": payload}
    await ws.send_message(json.dumps(frame))
    reply: dict[str, Any] = await recv(ws)
    return reply


async def _owner_gone(member: trio_websocket.WebSocketConnection) -> None:
    assert (await recv(member))["type"] == "owner_disconnected"


async def test_stranger_cannot_reclaim_a_room_without_password(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"owner_grace": 30.0})
    host, created = await _create(daemon)
    uuid = created["uuid"]
    ann = await join_room(daemon, uuid, "ann", host=host)
    await host.aclose()
    await _owner_gone(ann)
    stolen = await _reclaim(daemon, {"uuid": uuid, "token": None, "server_token": None})
    assert stolen["type"] == "error" and stolen["payload"]["code"] == "not_owner"
    forged = await _reclaim(daemon, {"uuid": uuid, "ownerKey": "x" * 32})
    assert forged["type"] == "error" and forged["payload"]["code"] == "not_owner"
    back = await _reclaim(daemon, {"uuid": uuid, "ownerKey": created["ownerKey"]})
    assert back["type"] == "instance_reclaimed" and back["payload"]["success"] is True
    assert (await recv(ann))["type"] == "owner_reconnected"


async def test_member_with_the_password_cannot_reclaim(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"owner_grace": 30.0})
    owner_browser, member_browser = ownership.new_key(), ownership.new_key()
    host, created = await _create(daemon, token="pw", extra_headers=_cookie(owner_browser))
    uuid = created["uuid"]
    ann = await join_room(daemon, uuid, "ann", token="pw", host=host)
    await host.aclose()
    await _owner_gone(ann)
    # The member knows uuid and password, as the reference join link gives them.
    for headers in ([], _cookie(member_browser)):
        stolen = await _reclaim(daemon, {"uuid": uuid, "token": "pw"}, extra_headers=headers)
        assert stolen["type"] == "error" and stolen["payload"]["code"] == "not_owner", stolen
    assert daemon.hub.instances[uuid].owner is None


async def test_reference_page_reclaims_from_its_own_browser(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"owner_grace": 30.0})
    # A browser without the cookie is given one with the handshake, scoped to /ws.
    first = await connect(daemon)
    given = dict(first.handshake_headers)[b"set-cookie"].decode()
    assert given.startswith(ownership.COOKIE_NAME + "=")
    assert "HttpOnly" in given and "SameSite=Strict" in given and "Path=/ws" in given
    key = given.split(";")[0].split("=", 1)[1]
    await first.aclose()
    # The reference page creates with that cookie, reloads, and reclaims without any proof.
    host, created = await _create(daemon, token="pw", extra_headers=_cookie(key))
    again = await connect(daemon, extra_headers=_cookie(key))
    assert b"set-cookie" not in dict(again.handshake_headers)
    await again.aclose()
    await host.aclose()
    reply = await _reclaim(
        daemon,
        {"uuid": created["uuid"], "token": "pw", "server_token": None},
        extra_headers=_cookie(key),
    )
    assert reply["type"] == "instance_reclaimed" and reply["payload"]["success"] is True
    assert reply["payload"]["ownerKey"] == created["ownerKey"]


async def test_forwarded_frames_carry_the_server_stamped_sender(wstund: RunningDaemon) -> None:
    host, created = await _create(wstund)
    uuid = created["uuid"]
    ann = await join_room(wstund, uuid, "ann", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    # bob claims to be ann, in the payload and in the envelope itself.
    forged = {"type": "chat_message", "from": "ann", "payload": {"from": "ann", "text": "hi"}}
    await bob.send_message(json.dumps(forged))
    for receiver in (host, ann):
        got = await recv(receiver)  # json.loads keeps the last "from": the server's
        assert got["from"] == "bob" and got["payload"]["from"] == "ann"
    await host.send_message(json.dumps({"type": "chat_message", "payload": {"text": "hello"}}))
    for receiver in (ann, bob):
        got = await recv(receiver)
        assert got["from"] is None and got["payload"] == {"text": "hello"}
    await send(ann, "user_join", {"userId": "bob", "name": "Bob"})
    assert (await recv(host))["from"] == "ann"
