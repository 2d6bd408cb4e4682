"""Marketplace end to end: a real marketplace on loopback, a real wstund, real HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from wstund.marketplace import store

from .conftest import RunningDaemon, StartDaemon
from .marketplace_server import Marketplace, start_marketplace

TIMEOUT = 10.0
V1 = {"service.html": b"<html>host v1</html>", "main.html": b"<html>user v1</html>"}
V2 = {"service.html": b"<html>host v2</html>", "main.html": b"<html>user v2</html>"}


@pytest.fixture
async def market(nursery: trio.Nursery, tmp_path: Path) -> Marketplace:
    return await start_marketplace(nursery, tmp_path / "market")


async def api(
    daemon: RunningDaemon, method: str, path: str, body: Any = None, *, admin: bool = True
) -> httpx.Response:
    headers = daemon.admin_headers if admin else {}
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=daemon.url, headers=headers) as client:
            return await client.request(method, path, json=body)


def on_disk(daemon: RunningDaemon) -> dict[str, bytes]:
    """Every file (through the symlinks) under the services directory."""
    base = daemon.hub.state_dir / "services"
    if not base.exists():
        return {}
    return {
        str(p.relative_to(base)): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not p.name == "state.json"
    } | {
        str(p.relative_to(base)): b"->" + str(p.readlink()).encode()
        for p in base.iterdir()
        if p.is_symlink()
    }


async def test_list_install_enable_update_restart_uninstall(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1.0.0", V1)
    daemon = await start_daemon(marketplace={"urls": [market.url + "/"]})

    listed = (await api(daemon, "POST", "/_api/marketplace/list", {})).json()
    assert listed["errors"] == []
    assert listed["services"] == [
        {
            "name": "echo",
            "displayName": "Echo",
            "description": "echo test service",
            "version": "1.0.0",
            "author": "tests",
            "installed": False,
            "installedVersion": None,
            "updateAvailable": False,
            "marketplace": market.url,
        }
    ]

    installed = await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})
    assert installed.status_code == 200, installed.text
    assert installed.json()["success"] is True
    service = installed.json()["service"]
    assert (service["name"], service["version"], service["enabled"]) == ("echo", "1.0.0", False)
    assert (
        await api(daemon, "GET", "/echo/main")
    ).status_code == 403  # new installs start disabled
    again = await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})
    assert (again.status_code, again.json()["error"]) == (409, "already_installed")

    assert (await api(daemon, "POST", "/_api/services/echo/enable")).status_code == 200
    page = await api(daemon, "GET", "/echo/main")
    assert page.status_code == 200 and page.content == V1["main.html"]
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in page.headers["Cache-Control"] and "Expires" not in page.headers
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and f"ws://127.0.0.1:{daemon.port}" in csp
    assert (await api(daemon, "GET", "/echo/service")).content == V1["service.html"]
    assert (await api(daemon, "GET", "/echo/nope")).status_code == 404
    assert (await api(daemon, "GET", "/libwstun.js")).status_code == 200

    market.publish("echo", "1.1.0", V2, pin=True)
    listed = (await api(daemon, "POST", "/_api/marketplace/list", {})).json()["services"][0]
    assert (listed["installed"], listed["installedVersion"], listed["updateAvailable"]) == (
        True,
        "1.0.0",
        True,
    )
    updated = await api(daemon, "POST", "/_api/marketplace/update", {"name": "echo"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["service"]["version"], updated.json()["service"]["enabled"]) == (
        "1.1.0",
        True,
    )
    assert (await api(daemon, "GET", "/echo/main")).content == V2["main.html"]
    versions = [p for p in (daemon.hub.state_dir / "services").iterdir() if p.name.startswith(".")]
    assert len(versions) == 1, versions  # the old version directory is gone

    stale = daemon.hub.state_dir / "services" / ".v-echo-interrupted" / "files"
    stale.mkdir(parents=True)
    (stale / "main.html").write_bytes(b"half")
    daemon.daemon.stop()
    restarted = await start_daemon(marketplace={"urls": [market.url]})
    service = (await api(restarted, "GET", "/_api/services/echo")).json()
    assert (service["version"], service["enabled"], service["builtin"]) == ("1.1.0", True, False)
    assert (await api(restarted, "GET", "/echo/service")).content == V2["service.html"]
    assert not stale.parent.exists()  # leftovers of an interrupted install are cleared at start

    removed = await api(restarted, "DELETE", "/_api/services/echo")
    assert removed.status_code == 200, removed.text
    assert list((restarted.hub.state_dir / "services").iterdir()) == []
    assert (await api(restarted, "GET", "/echo/main")).status_code == 404
    builtin = await api(restarted, "DELETE", "/_api/services/chat")
    assert builtin.status_code == 400


def _traversal(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x"}, endpoints=[{"path": "main", "file": "../../evil"}])


def _absolute(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x"}, endpoints=[{"path": "main", "file": "/etc/passwd"}])


def _too_big(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x" * 5000})


def _sha_mismatch(m: Marketplace) -> None:
    pin = hashlib.sha256(b"something else").hexdigest()
    m.publish(
        "bad",
        "1",
        {"main.html": b"x"},
        endpoints=[{"path": "main", "file": "main.html", "sha256": pin}],
    )


def _missing_file(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x"}, endpoints=[{"path": "main", "file": "other.html"}])


def _invalid_json(m: Marketplace) -> None:
    m.write("service/bad.json", b'{"name": "bad", "endpoints": [')


def _slow(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x"})
    m.delay["service/bad/main.html"] = 3.0


def _not_offered(m: Marketplace) -> None:
    pass


def _redirect_loop(m: Marketplace) -> None:
    m.publish("bad", "1", {"main.html": b"x"})
    for i in range(5):
        m.redirect[f"service/bad/main{i}.html"] = f"{m.url}/service/bad/main{i + 1}.html"
    m.redirect["service/bad/main.html"] = f"{m.url}/service/bad/main0.html"


def _service_too_big(m: Marketplace) -> None:
    m.publish("bad", "1", {"a.html": b"x" * 900, "b.html": b"y" * 900})


@pytest.mark.parametrize(
    ("name", "prepare", "status", "error"),
    [
        ("bad", _traversal, 400, "invalid_path"),
        ("bad", _absolute, 400, "invalid_path"),
        ("admin", _not_offered, 400, "reserved_name"),
        ("chat", _not_offered, 409, "builtin_conflict"),
        ("Bad", _not_offered, 400, "invalid_name"),
        ("bad", _too_big, 502, "file_too_large"),
        ("bad", _sha_mismatch, 502, "sha256_mismatch"),
        ("bad", _missing_file, 502, "not_found_upstream"),
        ("bad", _invalid_json, 400, "invalid_manifest"),
        ("bad", _slow, 504, "upstream_timeout"),
        ("bad", _not_offered, 404, "not_in_marketplace"),
        ("bad", _redirect_loop, 502, "too_many_redirects"),
        ("bad", _service_too_big, 502, "service_too_large"),
    ],
)
async def test_refusals_change_nothing(
    start_daemon: StartDaemon, market: Marketplace, name: str, prepare: Any, status: int, error: str
) -> None:
    market.publish("keep", "1", V1)
    daemon = await start_daemon(
        marketplace={
            "urls": [market.url],
            "max_file_size": 1000,
            "max_service_size": 1500,
            "timeout": 0.5,
            "max_redirects": 3,
        }
    )
    assert (
        await api(daemon, "POST", "/_api/marketplace/install", {"name": "keep"})
    ).status_code == 200
    before = on_disk(daemon)
    prepare(market)
    refused = await api(daemon, "POST", "/_api/marketplace/install", {"name": name})
    assert (refused.status_code, refused.json()["error"]) == (status, error), refused.text
    assert refused.json()["message"]
    assert on_disk(daemon) == before
    assert [s.name for s in daemon.hub.services.all() if not s.builtin] == ["keep"]


async def test_connection_dropped_mid_file_keeps_old_version(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1", V1)
    daemon = await start_daemon(marketplace={"urls": [market.url]})
    assert (
        await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})
    ).status_code == 200
    await api(daemon, "POST", "/_api/services/echo/enable")
    before = on_disk(daemon)
    market.publish("echo", "2", {k: v * 5000 for k, v in V2.items()})
    market.drop.add("service/echo/main.html")
    failed = await api(daemon, "POST", "/_api/marketplace/update", {"name": "echo"})
    assert (failed.status_code, failed.json()["error"]) == (502, "upstream_error"), failed.text
    assert on_disk(daemon) == before
    assert (await api(daemon, "GET", "/echo/main")).content == V1["main.html"]


async def test_cancelled_install_keeps_old_version(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1", V1)
    daemon = await start_daemon(marketplace={"urls": [market.url], "timeout": 1.0})
    assert (
        await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})
    ).status_code == 200
    await api(daemon, "POST", "/_api/services/echo/enable")
    before = on_disk(daemon)
    market.publish("echo", "2", V2)
    market.hang.add("service/echo/service.html")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            first: list[httpx.Response] = []

            async def update() -> None:
                first.append(
                    await api(daemon, "POST", "/_api/marketplace/update", {"name": "echo"})
                )

            nursery.start_soon(update)
            await market.hung.wait()
            busy = await api(daemon, "POST", "/_api/marketplace/update", {"name": "echo"})
            assert (busy.status_code, busy.json()["error"]) == (409, "install_in_progress")
    assert (first[0].status_code, first[0].json()["error"]) == (504, "upstream_timeout")
    assert on_disk(daemon) == before
    market.hung = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def cancel_when_hung() -> None:
                await market.hung.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_when_hung)
            await store.install(daemon.hub, market.url, "echo", enabled=True)
    assert on_disk(daemon) == before
    assert (await api(daemon, "GET", "/echo/main")).content == V1["main.html"]
    assert daemon.hub.services.get("echo").version == "1"  # type: ignore[union-attr]


async def test_marketplace_urls_and_a_failing_marketplace(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1", V1)
    daemon = await start_daemon(
        marketplace={"urls": ["http://127.0.0.1:9/"], "allow_private_addresses": True}
    )
    assert (await api(daemon, "GET", "/_api/marketplace/url")).json() == {
        "urls": ["http://127.0.0.1:9"]
    }
    bad = await api(daemon, "POST", "/_api/marketplace/url", {"url": "file:///etc"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_url")
    added = await api(daemon, "POST", "/_api/marketplace/url", {"url": market.url})
    assert added.json() == {"urls": ["http://127.0.0.1:9", market.url]}
    assert (await api(daemon, "GET", "/_api/marketplace/url")).json() == added.json()
    listed = (await api(daemon, "POST", "/_api/marketplace/list", {})).json()
    assert [s["name"] for s in listed["services"]] == ["echo"]
    assert [(e["url"], e["error"]) for e in listed["errors"]] == [
        ("http://127.0.0.1:9", "upstream_error")
    ]
    only = (await api(daemon, "POST", "/_api/marketplace/list", {"url": market.url})).json()
    assert only["errors"] == [] and len(only["services"]) == 1
    # Install tries each marketplace in turn; the unreachable one fails the call clearly.
    failed = await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})
    assert (failed.status_code, failed.json()["error"]) == (502, "upstream_error")
    ok = await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo", "url": market.url})
    assert ok.status_code == 200, ok.text
    garbage = await api(daemon, "POST", "/_api/marketplace/install", {"nom": "echo"})
    assert (garbage.status_code, garbage.json()["error"]) == (400, "invalid_request")


async def test_writes_need_the_admin_token(start_daemon: StartDaemon, market: Marketplace) -> None:
    market.publish("echo", "1", V1)
    daemon = await start_daemon(server={"admin_token": "adm"}, marketplace={"urls": [market.url]})
    refused = await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"}, admin=False)
    assert refused.status_code == 403
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            ok = await client.post(
                "/_api/marketplace/install",
                json={"name": "echo"},
                headers={"Authorization": "Bearer adm"},
            )
    assert ok.status_code == 200, ok.text


async def test_remove_waits_for_an_update_under_way(
    start_daemon: StartDaemon, market: Marketplace
) -> None:
    market.publish("echo", "1.0.0", V1)
    daemon = await start_daemon(marketplace={"urls": [market.url]})
    assert (await api(daemon, "POST", "/_api/marketplace/install", {"name": "echo"})).is_success
    market.publish("echo", "1.1.0", V2)
    market.delay["service/echo/main.html"] = 1.0
    async with trio.open_nursery() as nursery:
        updated: list[httpx.Response] = []

        async def update() -> None:
            updated.append(await api(daemon, "POST", "/_api/marketplace/update", {"name": "echo"}))

        nursery.start_soon(update)
        with trio.fail_after(TIMEOUT):
            while "echo" not in daemon.hub.installing:
                await trio.sleep(0.01)
        refused = await api(daemon, "DELETE", "/_api/services/echo")
        assert (refused.status_code, refused.json()["error"]) == (409, "install_in_progress")
    assert updated[0].status_code == 200, updated[0].text
    assert (await api(daemon, "GET", "/_api/services/echo")).json()["version"] == "1.1.0"
    assert (await api(daemon, "DELETE", "/_api/services/echo")).status_code == 200
    assert (await api(daemon, "GET", "/_api/services/echo")).status_code == 404
