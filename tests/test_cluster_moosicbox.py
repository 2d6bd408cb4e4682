"""MoosicBox across nodes: a request or an app's event socket naming a client whose sender is
on another node is carried there, streamed, as the tunnel's are."""

from __future__ import annotations

import hashlib
import json

import coredis
import httpx
import trio
import trio_websocket

from .conftest import StartNodes
from .localapp import pattern_sha256, start_local_app
from .moosicbox_sender import ADMIN, connect_sender, register
from .redisserver import RedisServer

CLIENT = "5d0f3c2a-8b1e-4f7a-9c6d-2e4b8a1f0c93"
MB = 1024 * 1024


async def test_moosicbox_through_a_node_without_the_sender(
    start_nodes: StartNodes, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2, server={"admin_token": ADMIN})
    local = await start_local_app(nursery)
    access, signature = await register(a, CLIENT)
    sender = await connect_sender(a, CLIENT, signature, local.url)
    async with coredis.Redis.from_url(redis_server.url) as redis:
        with trio.fail_after(5):  # a announces it at once (its registry refresh is woken)
            while not await redis.exists([f"wstund:moosicbox:{CLIENT}"]):
                await trio.sleep(0.02)

    n = 5 * MB
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            url = f"{b.url}/bytes?n={n}&clientId={CLIENT}"
            async with http.stream("GET", url, headers={"Authorization": access}) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
    assert size == n and digest.hexdigest() == pattern_sha256(n)
    assert [frame.data["path"] for frame in sender.http_frames] == ["bytes"]
    assert not [k for k in sender.http_frames[0].data.get("headers") or {} if "wstund" in k]

    # An app's event socket through b reaches the sender on a, and its pushes come back.
    query = f"moosicboxProfile=master&clientId={CLIENT}&signature={signature}"
    async with trio_websocket.open_websocket_url(b.ws_url("/ws", query)) as app:
        await app.send_message('{"type":"PING"}')
        with trio.fail_after(10):
            await sender.got_ws.wait()
        frame = sender.ws_frames[-1]
        assert frame["body"] == {"type": "PING"}
        await sender.push({"type": "PONG"}, request_id=frame["request_id"])
        with trio.fail_after(10):
            assert json.loads(await app.get_message()) == {"type": "PONG"}
