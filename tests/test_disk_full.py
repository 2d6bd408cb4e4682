"""A full disk: every write of state answers 507 with a JSON body, nothing is half-written,
and once space is back the same requests succeed. The daemon runs as its own process with
its state directory on a small tmpfs in a private mount namespace; the test fills that
tmpfs from inside the namespace (``nsenter``), so the kernel itself says ENOSPC."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

from .marketplace_server import Marketplace, start_marketplace
from .subdaemon import ADMIN_TOKEN, SubDaemon, launch, write_config

FILES = {"main.html": b"<p>main</p>", "service.html": b"<p>service</p>"}


async def in_namespace(daemon: SubDaemon, *command: str) -> None:
    """Run ``command`` in the daemon's user and mount namespace (where its tmpfs is)."""
    pid = str(daemon.process.pid)
    with trio.fail_after(30):
        await trio.run_process(
            ["nsenter", "-t", pid, "-U", "-m", "--preserve-credentials", *command],
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )


async def call(http: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response:
    with trio.fail_after(30):
        return await http.request(method, path, json=body, headers={"X-Admin-Token": ADMIN_TOKEN})


async def test_full_disk_answers_507_and_keeps_state_whole(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    market: Marketplace = await start_marketplace(nursery, tmp_path / "market")
    market.publish("echo", "1.0.0", FILES)
    market.publish("other", "1.0.0", FILES)
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="wstun-") as short:
        config = write_config(
            tmp_path / "c.toml",
            state,
            Path(short) / "a.sock",
            f'[marketplace]\nurls = ["{market.url}"]\nallow_private_addresses = true\n',
        )
        daemon = launch(tmp_path, config, tmpfs=(state, "size=2m"))
        try:
            port = await trio.to_thread.run_sync(daemon.wait_listening)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await _exercise(http, daemon, state)
        finally:
            await trio.to_thread.run_sync(daemon.stop)
    assert "Traceback" not in daemon.text(), daemon.text()


async def _exercise(http: httpx.AsyncClient, daemon: SubDaemon, state: Path) -> None:
    ok = await call(http, "POST", "/_api/marketplace/install", {"name": "echo"})
    assert ok.status_code == 200, ok.text
    assert (await call(http, "POST", "/_api/tunnel/clients", {"id": "before"})).status_code < 300
    urls_before = (await call(http, "GET", "/_api/marketplace/url")).json()

    await in_namespace(daemon, "dd", "if=/dev/zero", f"of={state}/filler", "bs=64k")

    refused = {
        "tunnel add": await call(http, "POST", "/_api/tunnel/clients", {"id": "after"}),
        "marketplace url": await call(
            http, "POST", "/_api/marketplace/url", {"url": "http://127.0.0.1:9/more"}
        ),
        "enable": await call(http, "POST", "/_api/services/echo/enable"),
        "install": await call(http, "POST", "/_api/marketplace/install", {"name": "other"}),
    }
    for what, answer in refused.items():
        assert answer.status_code == 507, (what, answer.status_code, answer.text)
        assert answer.json()["error"] == "insufficient_storage", (what, answer.text)
        assert "No space left" in answer.json()["message"] or "full" in answer.json()["message"]

    # Nothing half-done: the refused changes did not happen, in memory or on disk.
    clients = (await call(http, "GET", "/_api/tunnel/clients")).json()["clients"]
    assert [c["id"] for c in clients] == ["before"]
    assert (await call(http, "GET", "/_api/marketplace/url")).json() == urls_before
    assert (await call(http, "GET", "/_api/services/echo")).json()["enabled"] is False
    assert (await call(http, "GET", "/_api/services/other")).status_code == 404

    await in_namespace(daemon, "rm", f"{state}/filler")
    assert (await call(http, "POST", "/_api/tunnel/clients", {"id": "after"})).status_code < 300
    url = await call(http, "POST", "/_api/marketplace/url", {"url": "http://127.0.0.1:9/more"})
    assert url.status_code == 200, url.text
    assert (await call(http, "POST", "/_api/services/echo/enable")).status_code == 200
    other = await call(http, "POST", "/_api/marketplace/install", {"name": "other"})
    assert other.status_code == 200, other.text
