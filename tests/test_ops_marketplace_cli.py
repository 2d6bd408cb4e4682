"""wstunctl services search|install|update|remove against a real daemon and a real marketplace."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from .conftest import RunningDaemon, StartDaemon
from .marketplace_server import Marketplace, start_marketplace
from .test_ops_cli import admin, admin_json, ctl

V1 = {"service.html": b"<p>host v1</p>", "main.html": b"<p>user v1</p>"}
V2 = {"service.html": b"<p>host v2</p>", "main.html": b"<p>user v2</p>"}


@pytest.fixture
async def market(nursery: trio.Nursery, tmp_path: Path) -> Marketplace:
    return await start_marketplace(nursery, tmp_path / "market")


async def page(daemon: RunningDaemon, path: str) -> httpx.Response:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            return await client.get(path)


async def test_search_install_update_remove_over_the_admin_socket(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1.0.0", V1)
    market.publish("board", "0.3.0", {"service.html": b"b", "main.html": b"b"})
    daemon = await start_daemon(marketplace={"urls": [market.url]})

    found = await admin(daemon, "services", "search")
    assert found.exit_code == 0, found.output
    header, *rows = found.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "VERSION", "INSTALLED", "UPDATE"]
    assert sorted(r.split()[:2] for r in rows) == [["board", "0.3.0"], ["echo", "1.0.0"]]
    matching = await admin_json(daemon, "services", "search", "ECHO")
    assert [s["name"] for s in matching["services"]] == ["echo"]
    assert matching["services"][0]["installed"] is False and matching["errors"] == []

    installed = await admin(daemon, "services", "install", "echo")
    assert (installed.exit_code, installed.stdout.strip()) == (0, "installed echo 1.0.0")
    service = daemon.hub.services.get("echo")
    assert service is not None and service.version == "1.0.0" and not service.enabled
    assert (await page(daemon, "/echo/service")).status_code == 403  # starts disabled
    again = await admin(daemon, "services", "install", "echo")
    assert again.exit_code == 1 and "use update" in again.stderr

    assert (await admin(daemon, "services", "enable", "echo")).exit_code == 0
    assert (await page(daemon, "/echo/service")).text == "<p>host v1</p>"

    market.publish("echo", "1.1.0", V2)
    listed = await admin_json(daemon, "services", "search", "echo")
    assert listed["services"][0]["installedVersion"] == "1.0.0"
    assert listed["services"][0]["updateAvailable"] is True
    table = (await admin(daemon, "services", "search", "echo")).stdout
    assert table.splitlines()[1].split()[:4] == ["echo", "1.1.0", "1.0.0", "yes"]

    updated = await admin_json(daemon, "services", "update", "echo")
    assert updated["success"] and updated["service"]["version"] == "1.1.0"
    assert updated["service"]["enabled"] is True  # an update keeps the enabled state
    assert (await page(daemon, "/echo/main")).text == "<p>user v2</p>"

    removed = await admin(daemon, "services", "remove", "echo")
    assert (removed.exit_code, removed.stdout.strip()) == (0, "removed echo")
    assert daemon.hub.services.get("echo") is None
    assert (await page(daemon, "/echo/service")).status_code == 404


async def test_install_errors_and_explicit_url(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1.0.0", V1)
    # no marketplace configured; the test's marketplace is on loopback
    daemon = await start_daemon(marketplace={"allow_private_addresses": True})
    none = await admin(daemon, "services", "install", "echo")
    assert none.exit_code == 1 and "no marketplace" in none.stderr
    missing = await admin(daemon, "services", "update", "echo")
    assert missing.exit_code == 1 and "not installed" in missing.stderr

    unknown = await admin(daemon, "services", "install", "nosuch", "--url", market.url)
    assert unknown.exit_code == 1 and "nosuch" in unknown.stderr
    assert daemon.hub.services.get("nosuch") is None
    builtin = await admin(daemon, "services", "install", "chat", "--url", market.url)
    assert builtin.exit_code == 1 and builtin.stderr.startswith("error:")

    ok = await admin_json(daemon, "services", "install", "echo", "--url", market.url)
    assert ok["service"]["version"] == "1.0.0" and ok["service"]["enabled"] is False
    market.publish("echo", "2.0.0", V2)
    # update follows the marketplace it was installed from, even with none configured
    updated = await admin(daemon, "services", "update", "echo")
    assert (updated.exit_code, updated.stdout.strip()) == (0, "updated echo 2.0.0")


async def test_install_over_tcp_needs_the_admin_token(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1.0.0", V1)
    daemon = await start_daemon(
        server={"admin_token": "adm-secret"}, marketplace={"urls": [market.url]}
    )
    refused = await ctl("--url", daemon.url, "services", "install", "echo")
    assert refused.exit_code == 1 and daemon.hub.services.get("echo") is None
    done = await ctl(
        "--url", daemon.url, "--admin-token", "adm-secret", "--json", "services", "install", "echo"
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["service"]["name"] == "echo"
    # Searching makes the server fetch from marketplaces: an admin call too.
    anonymous = await ctl("--url", daemon.url, "services", "search")
    assert anonymous.exit_code == 1 and anonymous.stderr.startswith("error:")
    search = await ctl(
        "--url", daemon.url, "--admin-token", "adm-secret", "services", "search", "echo"
    )
    assert search.exit_code == 0, search.output
    assert search.stdout.splitlines()[1].split()[:3] == ["echo", "1.0.0", "1.0.0"]
