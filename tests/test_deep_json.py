"""JSON nested a thousand levels deep is bad input, not an internal error: ``invalid_json`` on
the relay socket (which stays open), a 400 with a JSON body on REST routes."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

from .conftest import RunningDaemon, connect, recv, send

DEEP = '{"a": ' * 1000 + "1" + "}" * 1000


async def test_deep_json_on_the_relay_socket_is_invalid_json(
    wstund: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await connect(wstund)
    for frame in ('{"type": "note", "payload": ' + DEEP + "}", '{"type": "x", "b": ' + DEEP + "}"):
        await ws.send_message(frame)
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["payload"]["code"] == "invalid_json", reply
    await send(ws, "ping", msg_id="alive")
    assert await recv(ws) == {"type": "pong", "id": "alive", "payload": {}}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "path",
    ["/_api/tunnel/clients", "/chat/service/api/kick", "/_api/marketplace/url"],
)
async def test_deep_json_on_rest_routes_is_a_400(
    wstund: RunningDaemon, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(10):
            r = await http.post(
                wstund.url + path,
                content=DEEP,
                headers={"Content-Type": "application/json", **wstund.admin_headers},
            )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
