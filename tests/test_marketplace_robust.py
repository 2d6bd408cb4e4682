"""Marketplace installs under bad manifests, trickling servers and a stopping daemon, and error
replies that never echo a huge input back."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from .conftest import RunningDaemon, StartDaemon, connect
from .marketplace_server import Marketplace, start_marketplace
from .subdaemon import ADMIN_TOKEN, launch, write_config

FILES = {"main.html": b"<p>main</p>", "service.html": b"<p>service</p>"}


@pytest.fixture
async def market(nursery: trio.Nursery, tmp_path: Path) -> Marketplace:
    return await start_marketplace(nursery, tmp_path / "market")


async def install(daemon: RunningDaemon | str, name: Any) -> httpx.Response:
    if isinstance(daemon, str):  # a daemon of subdaemon.write_config's
        url, headers = daemon, {"X-Admin-Token": ADMIN_TOKEN}
    else:
        url, headers = daemon.url, daemon.admin_headers
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            return await http.post(f"{url}/_api/marketplace/install", json={"name": name})


async def test_a_file_and_a_directory_of_the_same_name_is_a_400(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish(
        "clash",
        "1.0.0",
        {"a": b"file a"},
        endpoints=[
            {"path": "main", "file": "a", "type": "client"},
            {"path": "service", "file": "a/b", "type": "service"},
        ],
    )
    daemon = await start_daemon(marketplace={"urls": [market.url]})
    answer = await install(daemon, "clash")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_manifest"
    assert "'a'" in answer.json()["message"] and "'a/b'" in answer.json()["message"]
    assert not [p for p in (daemon.hub.state_dir / "services").iterdir()]


async def test_a_trickling_marketplace_cannot_hold_an_install_past_its_deadline(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    files = {f"f{n}.html": b"x" * 100 for n in range(4)}
    market.publish("slow", "1.0.0", files)
    market.trickle.update(f"service/slow/{f}" for f in files)  # 10 B/s: 10 s per file
    # Every read comes well within marketplace.timeout: only the whole-install deadline ends it.
    daemon = await start_daemon(
        marketplace={"urls": [market.url], "timeout": 5.0, "install_timeout": 1.5}
    )
    answer = await install(daemon, "slow")
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"] == "install_timeout"
    assert daemon.hub.services.get("slow") is None
    assert not [p for p in (daemon.hub.state_dir / "services").iterdir()]


async def test_sigterm_during_an_install_answers_503_before_exit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    market = await start_marketplace(nursery, tmp_path / "market")
    market.publish("held", "1.0.0", FILES)
    market.hang.add("service/held/main.html")
    with tempfile.TemporaryDirectory(prefix="wstun-") as short:
        config = write_config(
            tmp_path / "c.toml",
            tmp_path / "state",
            Path(short) / "a.sock",
            f'[marketplace]\nurls = ["{market.url}"]\n',
        )
        daemon = launch(tmp_path, config)
        try:
            port = await trio.to_thread.run_sync(daemon.wait_listening)
            answers: list[httpx.Response] = []

            async def ask() -> None:
                answers.append(await install(f"http://127.0.0.1:{port}", "held"))

            async with trio.open_nursery() as requests:
                requests.start_soon(ask)
                with trio.fail_after(10):
                    await market.hung.wait()
                os.kill(daemon.process.pid, signal.SIGTERM)
            status = await trio.to_thread.run_sync(daemon.wait_exit)
        finally:
            await trio.to_thread.run_sync(daemon.stop)
    assert answers[0].status_code == 503, answers[0].text
    assert answers[0].json()["error"] == "shutting_down"
    assert status == 0, daemon.text()


async def test_error_replies_do_not_echo_a_huge_input(wstund: RunningDaemon) -> None:
    ws = await connect(wstund)
    huge = 'x"\\' * 200_000  # 600 KB, every character escaped when quoted
    await ws.send_message(json.dumps({"type": huge, "id": "big", "payload": {}}))
    with trio.fail_after(10):
        reply = await ws.get_message()
    assert len(reply) < 2000, len(reply)
    error = json.loads(reply)
    assert error["id"] == "big" and error["payload"]["code"] == "unknown_type"
    await ws.send_message(json.dumps({"type": "ping", "id": "i" * 600_000}))
    # A pong echoes the id (the client asked for it); an error never echoes an id that long.
    await ws.send_message(json.dumps({"type": "nope", "id": "i" * 600_000, "payload": 5}))
    with trio.fail_after(10):
        pong = json.loads(await ws.get_message())
        refused = await ws.get_message()
    assert pong["type"] == "pong"
    assert len(refused) < 2000 and "id" not in json.loads(refused)
    answer = await install(wstund, "X" * 600_000)
    assert answer.status_code == 400 and len(answer.content) < 2000
    assert answer.json()["error"] == "invalid_name"
