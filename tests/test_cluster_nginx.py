"""Three nodes behind the README's nginx recipe (round robin, no stickiness), as a user meets
them: chat across nodes, a tunnelled download and a MoosicBox server whose every call (register,
signature token, sender socket, requests) goes through nginx, whichever node it picks."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from .conftest import RunningDaemon, StartNodes, recv, send
from .localapp import pattern_sha256, start_local_app
from .moosicbox_sender import ADMIN, FakeSender
from .moosicbox_sender import register as register_moosicbox
from .redisserver import free_port
from .test_cluster_moosicbox import CLIENT as MOOSICBOX_CLIENT
from .test_cluster_moosicbox import _download as moosicbox_download
from .test_tunnel_e2e import CLIENT, MB, agent_for, register, run_agent

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_recipe() -> str:
    """The nginx ``upstream``/``server`` blocks from the README's "Several nodes" section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```nginx\n", text.index("## Several nodes")) + len("```nginx\n")
    return text[start : text.index("```", start)]


class Nginx:
    """Debian's nginx running ``recipe`` on a free loopback port, stopped by its pid."""

    def __init__(self, workdir: Path, recipe: str, nodes: list[RunningDaemon]) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        servers = "".join(f"    server 127.0.0.1:{node.port};\n" for node in nodes)
        head, _, rest = recipe.partition("upstream wstund {\n")
        rest = rest[rest.index("}") :]
        recipe = head + "upstream wstund {\n" + servers + rest
        recipe = recipe.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
            "worker_processes 1;\nevents { worker_connections 256; }\n"
            f"http {{\naccess_log off;\nclient_body_temp_path {workdir};\n"
            f"proxy_temp_path {workdir};\n{recipe}\n}}\n"
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError((workdir / "error.log").read_text()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[list[Nginx]]:
    started: list[Nginx] = []
    yield started
    for server in started:
        server.stop()


async def test_chat_and_tunnel_through_the_readme_recipe(
    start_nodes: StartNodes, nginx_in_front: list[Nginx], tmp_path: Path, nursery: trio.Nursery
) -> None:
    nodes = await start_nodes(3, server={"admin_token": ADMIN})  # one admin token: see README
    nginx = Nginx(tmp_path / "nginx", readme_recipe(), nodes)
    nginx_in_front.append(nginx)
    front = f"ws://127.0.0.1:{nginx.port}/ws"

    host = await trio_websocket.connect_websocket_url(nursery, front)
    await send(host, "create_instance", {"name": "lobby"}, service="chat", msg_id="c")
    uuid = (await recv(host))["payload"]["uuid"]
    members = []
    for i in range(6):  # round robin: the members land on every node
        member = await trio_websocket.connect_websocket_url(nursery, front)
        await send(member, "join_instance", {"uuid": uuid, "userId": f"u{i}"}, msg_id=i)
        assert (await recv(member))["type"] == "ack"
        assert (await recv(host))["type"] == "client_connected"
        members.append(member)
    assert sum(1 for node in nodes if node.hub.peers) == 3
    await send(members[0], "chat", {"text": "hello"})
    assert await recv(host) == {"type": "chat", "payload": {"text": "hello"}, "from": "u0"}
    for member in members[1:]:
        assert (await recv(member))["from"] == "u0"

    # The tunnel: the agent on one node, downloads through whichever node nginx picks.
    local = await start_local_app(nursery)
    await run_agent(nursery, agent_for(nodes[0], await register(nodes[0]), local))
    n = 4 * MB
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(3):
            with trio.fail_after(30):
                got = await http.get(f"http://127.0.0.1:{nginx.port}/_t/{CLIENT}/bytes?n={n}")
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == pattern_sha256(n)

    # MoosicBox, every call through nginx: WS_HOST=ws://nginx/ws and its /auth routes.
    base = f"http://127.0.0.1:{nginx.port}"
    access, signature = await register_moosicbox(base, MOOSICBOX_CLIENT)
    ws = await trio_websocket.connect_websocket_url(
        nursery, f"{front}?clientId={MOOSICBOX_CLIENT}&sender=true&signature={signature}"
    )
    sender = FakeSender(ws, local.url)
    nursery.start_soon(sender.serve, nursery)
    with trio.fail_after(10):
        while not any(MOOSICBOX_CLIENT in node.hub.moosicbox.senders for node in nodes):
            await trio.sleep(0.02)
    for _ in range(3):
        await moosicbox_download(base, access, MB + 7)
