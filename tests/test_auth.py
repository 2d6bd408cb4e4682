"""Server token and admin token on HTTP paths and on the WebSocket upgrade."""

from __future__ import annotations

import httpx
import trio_websocket

from .conftest import (
    RunningDaemon,
    StartDaemon,
    connect,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)


async def test_server_token_on_http(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv"})
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        refused = await client.get("/_api/services")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="wstun"'
        assert refused.json()["error"] == "unauthorized"
        wrong = await client.get("/_api/services", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        by_header = await client.get("/_api/services", headers={"Authorization": "Bearer srv"})
        assert by_header.status_code == 200
        assert (await client.get("/_api/services?token=srv")).status_code == 200
        assert (await client.get("/libwstun.js")).status_code == 200


async def _rejection(daemon: RunningDaemon, query: str) -> int:
    """The HTTP status of a refused upgrade (trio-websocket may wrap it in a group)."""
    try:
        async with trio_websocket.open_websocket_url(daemon.ws_url("/ws", query)):
            pass
    except trio_websocket.ConnectionRejected as rejected:
        return int(rejected.status_code)
    except BaseExceptionGroup as group:
        match, _ = group.split(trio_websocket.ConnectionRejected)
        assert match is not None, group
        return int(match.exceptions[0].status_code)  # type: ignore[union-attr]
    raise AssertionError("the upgrade was accepted")


async def test_server_token_on_websocket_upgrade(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv"})
    for query in ("", "token=wrong"):
        assert await _rejection(daemon, query) == 401
    by_query = await connect(daemon, "token=srv")
    await send(by_query, "ping")
    assert (await recv(by_query))["type"] == "pong"
    by_header = await connect(daemon, extra_headers=[(b"Authorization", b"Bearer srv")])
    await send(by_header, "ping")
    assert (await recv(by_header))["type"] == "pong"


async def test_admin_token_guards_management(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"admin_token": "adm"})
    host, uuid = await create_room(daemon)
    member = await join_room(daemon, uuid, "ann", host=host)
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        assert (await client.get("/_api/services")).status_code == 200
        for method, path in [
            ("POST", "/_api/services/chat/disable"),
            ("DELETE", f"/_api/instances/{uuid}"),
            ("POST", "/chat/service/api/stop"),
            ("GET", "/admin"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 403, path
            assert response.json()["error"] == "forbidden"
        closed = await client.delete(f"/_api/instances/{uuid}", headers={"X-Admin-Token": "adm"})
        assert closed.status_code == 200 and closed.json() == {"success": True, "uuid": uuid}
    assert (await recv(member))["type"] == "instance_destroyed"
    assert await expect_closed(member) == 4004


async def test_rest_api_services_and_instances(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    member = await join_room(wstund, uuid, "ann", host=host)
    async with httpx.AsyncClient(base_url=wstund.url, headers=wstund.admin_headers) as client:
        names = [s["name"] for s in (await client.get("/_api/services")).json()["services"]]
        assert names == ["chat", "fileshare"]
        shown = (await client.get("/_api/services/chat")).json()
        assert shown["instanceCount"] == 1 and shown["instances"][0]["uuid"] == uuid
        assert (await client.get("/_api/services/nope")).status_code == 404
        removed = await client.delete("/_api/services/chat")
        assert removed.status_code == 400 and removed.json()["error"] == "builtin_service"
        clients = (await client.get("/chat/service/api/clients")).json()["clients"]
        assert clients == [{"userId": "ann", "instanceUuid": uuid, "instanceName": "Room"}]
        status = (await client.get("/chat/service/api/status")).json()
        assert status["userCount"] == 1 and status["enabled"] is True
        disabled = await client.post("/_api/services/chat/disable")
        assert disabled.json()["service"]["enabled"] is False
        assert (await client.get("/_api/instances")).json() == {"instances": []}
        assert (await client.delete("/_api/instances/deadbeef")).status_code == 404
    assert (await recv(host))["type"] == "service_disabled"
    assert (await recv(host))["payload"] == {"uuid": uuid, "reason": "service_disabled"}
    assert (await recv(member))["type"] == "instance_destroyed"
    again = await connect(wstund)
    await send(again, "create_instance", service="chat")
    assert (await recv(again))["payload"]["code"] == "service_disabled"
