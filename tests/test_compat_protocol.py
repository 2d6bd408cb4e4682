"""The reference's frames, exactly as its library and pages send them, and what they read back:
refusal texts, room message types, and the pre-room types wstund does not serve."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio_websocket

from .conftest import RunningDaemon, StartDaemon, connect, join_room, recv


async def _frame(
    ws: trio_websocket.WebSocketConnection, type_: str, service: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    """Send a frame shaped as the reference library's ``send`` (no id); the reply."""
    await ws.send_message(json.dumps({"type": type_, "service": service, "payload": payload}))
    reply: dict[str, Any] = await recv(ws)
    return reply


async def test_reference_refusals_are_error_messages(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "st"})
    host = await connect(daemon, "token=st")
    created = await _frame(
        host, "create_instance", "chat", {"name": "R", "token": "pw", "server_token": "st"}
    )
    uuid = created["payload"]["uuid"]
    other = await connect(daemon, "token=st")
    cases = [
        (
            "create_instance",
            None,
            {"name": "R", "token": None, "server_token": "st"},
            "Service name is required",
            "service_required",
        ),
        (
            "create_instance",
            "chat",
            {"name": "R", "token": None, "server_token": "bad"},
            "Invalid server auth token",
            "invalid_server_token",
        ),
        (
            "join_instance",
            "chat",
            {"uuid": "00000000", "userId": "u1", "token": None},
            "Instance not found or not available",
            "instance_not_found",
        ),
        (
            "join_instance",
            "chat",
            {"uuid": uuid, "userId": "u1", "token": "nope"},
            "Invalid instance token",
            "invalid_token",
        ),
        (
            "reclaim_instance",
            "chat",
            {"uuid": "00000000", "token": None, "server_token": "st"},
            "Instance not found",
            "instance_not_found",
        ),
        (
            "reclaim_instance",
            "chat",
            {"uuid": uuid, "token": "nope", "server_token": "st"},
            "Invalid instance token",
            "invalid_token",
        ),
    ]
    for type_, service, payload, text, code in cases:
        reply = await _frame(other, type_, service, payload)
        # The reference library reads payload.message; the reference also sends payload.error.
        assert reply == {"type": "error", "payload": {"message": text, "error": text, "code": code}}
    # Every refusal left the socket usable, as the reference does.
    joined = await _frame(
        other, "join_instance", "chat", {"uuid": uuid, "userId": "u1", "token": "pw"}
    )
    assert joined["type"] == "ack" and joined["payload"]["success"] is True


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        ("user_join", {"userId": "ann"}),
        ("user_leave", {"userId": "ann"}),
        (
            "file_add",
            {
                "id": "ann/f1",
                "localId": "f1",
                "filename": "a.txt",
                "size": 3,
                "mimeType": "text/plain",
                "ownerId": "ann",
            },
        ),
        ("file_remove", {"id": "ann/f1"}),
        ("request_state", {"userId": "ann"}),
        ("state_response", {"userId": "ann", "files": []}),
        ("chat_message", {"userId": "ann", "text": "hi"}),
    ],
)
async def test_reference_room_types_reach_the_room(
    wstund: RunningDaemon, type_: str, payload: dict[str, Any]
) -> None:
    host = await connect(wstund)
    created = await _frame(
        host, "create_instance", "fileshare", {"name": "F", "token": None, "server_token": None}
    )
    uuid = created["payload"]["uuid"]
    ann = await join_room(wstund, uuid, "ann", service="fileshare", host=host)
    bob = await join_room(wstund, uuid, "bob", service="fileshare", host=host)
    await ann.send_message(json.dumps({"type": type_, "service": "fileshare", "payload": payload}))
    expected = {"type": type_, "service": "fileshare", "payload": payload, "from": "ann"}
    assert await recv(host) == expected
    assert await recv(bob) == expected


@pytest.mark.parametrize(
    "type_",
    [
        "unregister",
        "client_register",
        "file_register",
        "file_unregister",
        "chat_join",
        "chat_leave",
        "data",
        "file_list",
        "chat_user_list",
        "leave_instance",
    ],
)
async def test_reference_pre_room_types_are_refused(wstund: RunningDaemon, type_: str) -> None:
    ws = await connect(wstund)
    reply = await _frame(ws, type_, "chat", {"userId": "u1", "clientType": "chat"})
    assert reply["type"] == "error" and reply["payload"]["code"] == "unknown_type"
    assert type_ in reply["payload"]["message"]


async def test_reference_http_paths(wstund: RunningDaemon) -> None:
    """``/_api/instances/{service}`` lists that service's rooms; ``/debug/logs`` (the
    reference's optional logcat stream) is not served."""
    chat = await connect(wstund)
    created = await _frame(chat, "create_instance", "chat", {"name": "C"})
    files = await connect(wstund)
    await _frame(files, "create_instance", "fileshare", {"name": "F"})
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        listed = (await client.get("/_api/instances/chat")).json()["instances"]
        assert [room["uuid"] for room in listed] == [created["payload"]["uuid"]]
        logs = await client.get("/debug/logs")
        assert logs.status_code == 404
