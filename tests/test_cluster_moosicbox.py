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


async def _wait_sender_on(redis_url: str, node: str) -> None:
    """Wait until the registry names ``node`` as the holder of CLIENT's sender."""
    async with coredis.Redis.from_url(redis_url) as redis:
        with trio.fail_after(10):
            while await redis.get(f"wstund:moosicbox:{CLIENT}") != node.encode():
                await trio.sleep(0.02)


async def _download(url: str, access: str, n: int) -> None:
    """A tunnelled GET of n pattern bytes, checked byte for byte."""
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            target = f"{url}/bytes?n={n}&clientId={CLIENT}"
            async with http.stream("GET", target, headers={"Authorization": access}) as response:
                assert response.status_code == 200, await response.aread()
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
    assert size == n and digest.hexdigest() == pattern_sha256(n)


async def test_moosicbox_tokens_and_sender_cluster_wide(
    start_nodes: StartNodes, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Registered through a, signed through b, sender on c, called through a; a second sender
    on b replaces c's, which c closes (4009)."""
    a, b, c = await start_nodes(3, server={"admin_token": ADMIN})
    local = await start_local_app(nursery)
    access, signature = await register(a, CLIENT, signer=b)
    # Stored as hashes only: neither token is anywhere in Redis.
    async with coredis.Redis.from_url(redis_server.url) as redis:
        stored = await redis.hgetall("wstund:moosicbox-tokens")
    assert len(stored) == 2
    assert not [v for v in stored.items() if access.encode() in b"".join(v)]
    assert not [v for v in stored.items() if signature.encode() in b"".join(v)]

    first = await connect_sender(c, CLIENT, signature, local.url)
    await _wait_sender_on(redis_server.url, "c")
    await _download(a.url, access, MB + 12345)
    assert [frame.data["path"] for frame in first.http_frames] == ["bytes"]

    second = await connect_sender(b, CLIENT, signature, local.url)
    with trio.fail_after(10):
        while first.ws.closed is None:
            await trio.sleep(0.02)
    assert first.ws.closed.code == 4009
    await _wait_sender_on(redis_server.url, "b")
    with trio.fail_after(10):
        while CLIENT in c.hub.moosicbox.senders:
            await trio.sleep(0.02)
    await _download(a.url, access, 54321)
    assert len(first.http_frames) == 1
    assert [frame.data["path"] for frame in second.http_frames] == ["bytes"]
    assert not second.ws.closed


async def test_moosicbox_removal_revokes_on_every_node(
    start_nodes: StartNodes, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """A client removed through one node loses its tokens on every node and its sender (on
    another node) is closed; with Redis down, a node keeps accepting the tokens it knows and
    refuses new ones with 503 cluster_unavailable."""
    a, b, c = await start_nodes(3, server={"admin_token": ADMIN})
    local = await start_local_app(nursery)
    access, signature = await register(a, CLIENT)
    sender = await connect_sender(c, CLIENT, signature, local.url)
    await _wait_sender_on(redis_server.url, "c")
    await _download(b.url, access, 1000)

    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{b.url}/_api/moosicbox/clients", headers=admin)
        assert [client["id"] for client in r.json()["clients"]] == [CLIENT]
        r = await http.delete(f"{b.url}/_api/moosicbox/clients/{CLIENT}", headers=admin)
        assert r.status_code == 200, r.text
        with trio.fail_after(10):
            while sender.ws.closed is None:
                await trio.sleep(0.02)
        assert sender.ws.closed.code == 4003
        for node in (a, b, c):
            r = await http.post(
                f"{node.url}/auth/signature-token?clientId={CLIENT}",
                headers={"Authorization": access},
            )
            assert r.status_code == 401, (node.url, r.text)

        access, signature = await register(a, CLIENT)  # again, then Redis goes away
        r = await http.post(  # c copies the signature token at its first check
            f"{c.url}/auth/validate-signature-token?clientId={CLIENT}&signature={signature}"
        )
        assert r.status_code == 200, r.text
        redis_server.stop()
        r = await http.post(
            f"{c.url}/auth/validate-signature-token?clientId={CLIENT}&signature={signature}"
        )
        assert r.status_code == 200, r.text
        r = await http.post(  # a knows the access token: it checks, but cannot issue
            f"{a.url}/auth/signature-token?clientId={CLIENT}", headers={"Authorization": access}
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "cluster_unavailable"
