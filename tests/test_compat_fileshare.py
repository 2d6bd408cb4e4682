"""Fileshare downloads exactly as the reference pages make them: the one-segment link
``/fileshare/download/`` + encodeURIComponent(userId + "/" + localFileId), answered by an owner
that streams as the reference page does (http_response_start, 64 KiB base64 chunks)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import quote

import httpx
import trio
import trio_websocket

from tests.conftest import RunningDaemon, StartDaemon, connect, recv

MiB = 1024 * 1024


async def _reference_member(daemon: RunningDaemon, query: str = "") -> tuple[Any, Any, str, str]:
    """A reference host page and a reference member page (frames as libwstun.js sends them)."""
    host = await connect(daemon, query)
    create = {
        "type": "create_instance",
        "service": "fileshare",
        "payload": {"name": "Files", "token": None, "server_token": None},
    }
    await host.send_message(json.dumps(create))
    uuid = (await recv(host))["payload"]["uuid"]
    member = await connect(daemon, query)
    user_id = "lq3x9k2ab12cd"  # WSTun.generateId() shape
    join = {
        "type": "join_instance",
        "service": "fileshare",
        "payload": {"uuid": uuid, "userId": user_id, "token": None},
    }
    await member.send_message(json.dumps(join))
    assert (await recv(member))["type"] == "ack"
    return host, member, uuid, user_id


async def _serve_like_reference_page(
    member: trio_websocket.WebSocketConnection, files: dict[str, bytes], seen: list[str]
) -> None:
    """The reference page's streamFile: local id = last segment of fileId, 64 KiB chunks."""
    while True:
        try:
            message = json.loads(await member.get_message())
        except trio_websocket.ConnectionClosed:
            return
        if message.get("type") != "file_request":
            continue
        payload = message["payload"]
        seen.append(payload["fileId"])
        request_id, local = payload["requestId"], payload["fileId"].split("/")[-1]

        async def send(type_: str, body: dict[str, Any]) -> None:
            await member.send_message(
                json.dumps({"type": type_, "service": "fileshare", "payload": body})
            )

        data = files.get(local)
        if data is None:
            await send(
                "http_response_chunk",
                {"request_id": request_id, "error": "File not found", "done": True},
            )
            continue
        await send(
            "http_response_start",
            {
                "request_id": request_id,
                "status": 200,
                "headers": {
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="{local}.bin"',
                },
            },
        )
        for offset in range(0, len(data), 65536):
            chunk = base64.b64encode(data[offset : offset + 65536]).decode()
            await send(
                "http_response_chunk",
                {"request_id": request_id, "chunk_base64": chunk, "done": False},
            )
        await send("http_response_chunk", {"request_id": request_id, "done": True})


async def test_reference_download_link_one_segment_and_two(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "st"})
    _host, member, _uuid, user_id = await _reference_member(daemon, "token=st")
    body = os.urandom(5 * MiB + 17)
    seen: list[str] = []
    daemon.nursery.start_soon(_serve_like_reference_page, member, {"fabc123": body}, seen)
    global_id = f"{user_id}/fabc123"
    links = [
        # The reference page's link, byte for byte: encodeURIComponent + ?token=.
        "/fileshare/download/" + quote(global_id, safe="") + "?token=st",
        f"/fileshare/download/{user_id}/fabc123?token=st",
    ]
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            for link in links:
                assert "%2F" in links[0]
                response = await client.get(link)
                assert response.status_code == 200, response.text
                assert response.content == body
                assert (
                    response.headers["content-disposition"] == 'attachment; filename="fabc123.bin"'
                )
            missing = await client.get(
                "/fileshare/download/" + quote(f"{user_id}/nope", safe="") + "?token=st"
            )
            assert missing.status_code == 502
            bare = await client.get("/fileshare/download/" + quote(user_id, safe="") + "?token=st")
            assert bare.status_code == 404 and bare.json()["error"] == "not_found"
    # file_request.fileId carries the global id, as the reference server sends it.
    assert seen == [global_id, global_id, f"{user_id}/nope"]
