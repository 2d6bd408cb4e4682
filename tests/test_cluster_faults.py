"""Cluster faults: Redis stopped and restarted under traffic, a node killed mid-room."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from .conftest import StartNodes, connect, create_room, expect_closed, join_room, recv, send
from .localapp import start_local_app
from .redisserver import RedisServer, free_port
from .test_tunnel_e2e import CLIENT, MB, agent_for, register, run_agent


async def _join_when_linked(
    node: Any, uuid: str, user_id: str
) -> trio_websocket.WebSocketConnection:
    """Join from ``node``, retrying while its link to Redis is still coming back."""
    with trio.fail_after(20):
        while True:
            member = await connect(node)
            await send(member, "join_instance", {"uuid": uuid, "userId": user_id}, msg_id="j")
            reply = await recv(member)
            if reply["type"] == "ack":
                return member
            assert reply["payload"]["code"] == "cluster_unavailable", reply
            await member.aclose()
            await trio.sleep(0.2)


async def test_redis_down_keeps_local_rooms_and_recovers(
    start_nodes: StartNodes, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(2)
    host, uuid = await create_room(a)
    remote = await join_room(b, uuid, "remote", host=host)
    local = await join_room(a, uuid, "local", host=host)

    redis_server.stop()
    # The cross-node member is told and closed; the owner sees it leave.
    assert await recv(remote, timeout=10) == {
        "type": "instance_destroyed",
        "payload": {"uuid": uuid, "reason": "cluster_unavailable"},
    }
    assert await expect_closed(remote) == 4004
    assert await recv(host, timeout=10) == {
        "type": "client_disconnected",
        "payload": {"userId": "remote", "instanceUuid": uuid},
    }
    # The local room keeps working.
    await send(local, "chat", {"text": "still here"})
    assert (await recv(host))["payload"] == {"text": "still here"}
    # A cross-node join is refused with a clear code.
    late = await connect(b)
    await send(late, "join_instance", {"uuid": uuid, "userId": "late"}, msg_id="j")
    refused = await recv(late)
    assert refused["type"] == "error" and refused["payload"]["code"] == "cluster_unavailable"

    redis_server.start()
    back = await _join_when_linked(b, uuid, "back")
    assert (await recv(host))["payload"]["userId"] == "back"
    await send(host, "chat", {"text": "welcome back"})
    assert (await recv(back))["payload"] == {"text": "welcome back"}


NODE_ADMIN_TOKEN = "node-admin-token"


def _write_config(path: Path, port: int, redis_url: str, node_id: str) -> None:
    path.write_text(
        f"""
[server]
bind = ["127.0.0.1:{port}"]
state_dir = "{path.parent / node_id}"
admin_token = "{NODE_ADMIN_TOKEN}"
[admin]
socket = "{path.parent / node_id}.sock"
[cluster]
redis_url = "{redis_url}"
node_id = "{node_id}"
node_ttl = 3.0
secret = "cluster-secret-for-tests"
""",
        encoding="utf-8",
    )


class _NodeProcess:
    """A wstund node in a process of its own, so that it can be killed (SIGKILL)."""

    def __init__(self, tmp_path: Path, redis_url: str, node_id: str) -> None:
        self.port = free_port()
        config = tmp_path / f"{node_id}.toml"
        _write_config(config, self.port, redis_url, node_id)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from wstund.daemon import main; main()",
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        with trio.fail_after(20):
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return
                except OSError:
                    await trio.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"X-Admin-Token": NODE_ADMIN_TOKEN}

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
async def doomed(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[_NodeProcess]:
    """Node x, in a process of its own; killed at the end if the test did not."""
    node = _NodeProcess(tmp_path, redis_server.url, "x")
    try:
        await node.wait_ready()
        yield node
    finally:
        node.kill()


async def test_killed_node_destroys_its_rooms_elsewhere(
    start_nodes: StartNodes, doomed: _NodeProcess, nursery: trio.Nursery
) -> None:
    (b,) = await start_nodes(1, cluster={"node_id": "b"})
    host = await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{doomed.port}/ws")
    await send(host, "create_instance", {"name": "doomed"}, service="chat", msg_id="c")
    uuid = (await recv(host))["payload"]["uuid"]
    member = await join_room(b, uuid, "bob")
    assert (await recv(host))["type"] == "client_connected"
    doomed.kill()
    assert await recv(member, timeout=15) == {
        "type": "instance_destroyed",
        "payload": {"uuid": uuid, "reason": "node_gone"},
    }
    assert await expect_closed(member) == 4004
    lister = await connect(b)
    await send(lister, "list_instances", {}, msg_id="l")
    assert (await recv(lister))["payload"]["instances"] == []


async def test_killed_node_mid_download_truncates_without_hanging(
    start_nodes: StartNodes, doomed: _NodeProcess, nursery: trio.Nursery
) -> None:
    (b,) = await start_nodes(1, cluster={"node_id": "b"})
    local = await start_local_app(nursery)
    secret = await register(doomed)  # type: ignore[arg-type]
    await run_agent(nursery, agent_for(doomed, secret, local))  # type: ignore[arg-type]
    size = 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(30):
            async with http.stream("GET", f"{b.url}/_t/{CLIENT}/bytes?n={200 * MB}") as got:
                assert got.status_code == 200
                try:
                    async for chunk in got.aiter_raw():
                        size += len(chunk)
                        if size >= MB and doomed.process.poll() is None:
                            doomed.kill()
                except httpx.HTTPError:
                    pass  # the response was cut: what a caller must see
        assert MB <= size < 200 * MB
        # Until the dead node's entries expire its agent's requests get 503, then the
        # tunnel is simply unknown here (404).
        statuses = []
        with trio.fail_after(15):
            while not statuses or statuses[-1] != 404:
                statuses.append((await http.get(f"{b.url}/_t/{CLIENT}/x")).status_code)
                await trio.sleep(0.1)
        assert set(statuses[:-1]) <= {503}, statuses
