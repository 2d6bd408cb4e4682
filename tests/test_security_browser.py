"""Headless Chromium as the attacker: other origins and content wstund serves try to manage it.

The admin is logged in to /admin in the same browser (its cookie is there to be abused), and
the attacks come from a page on another origin, a fileshare member's 404 download, a registered
program's 500 answer, a tunnelled app under /_t/ and an installed marketplace page. None may
read or write the management API or register a service worker; when the admin logs in again,
the token must not leak.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from wstund.agent import Agent, AgentConfig

from .browser import Browser
from .conftest import RunningDaemon, StartDaemon, connect, create_room, join_room, recv, send
from .evilsite import EvilSite, start_evil_site
from .marketplace_server import start_marketplace
from .test_ops_cli import admin

OpenBrowser = Callable[..., Awaitable[Browser]]
ADMIN_PAGE_LOADED = "document.body.dataset.loaded === '1'"


async def answer_downloads(member: trio_websocket.WebSocketConnection, evil: EvilSite) -> None:
    """A fileshare member that answers every file request with the attacker's content: the page
    with status 404 (text/html, Service-Worker-Allowed: /), the worker with 200."""
    while True:
        message = json.loads(await member.get_message())
        if message.get("type") != "file_request":
            continue
        payload = message["payload"]
        rid = payload["requestId"]
        if payload["fileId"] == "sw.js":
            status, ctype, body = 200, "text/javascript", evil.worker()
        else:
            status, ctype = 404, "text/html"
            body = evil.attack_page("/fileshare/download/mallory/sw.js")
        headers = {"Content-Type": ctype, "Service-Worker-Allowed": "/"}
        start = {"request_id": rid, "status": status, "headers": headers}
        await send(member, "http_response_start", start)
        chunk = {"request_id": rid, "chunk_base64": base64.b64encode(body).decode(), "done": True}
        await send(member, "http_response_chunk", chunk)


async def answer_program(program: trio_websocket.WebSocketConnection, evil: EvilSite) -> None:
    """A registered program ``evilprog`` answering with the attacker's page (status 500) and
    its worker (with Service-Worker-Allowed: /)."""
    while True:
        message = json.loads(await program.get_message())
        if message.get("type") != "http_request":
            continue
        request = message["payload"]
        if request["path"].endswith("/sw.js"):
            status, ctype, body = 200, "text/javascript", evil.worker()
        else:
            status, ctype, body = 500, "text/html", evil.attack_page("/evilprog/sw.js")
        headers = {"Content-Type": ctype, "Service-Worker-Allowed": "/"}
        reply = {"request_id": request["request_id"], "status": status, "headers": headers}
        await send(program, "http_response", {**reply, "body": body.decode()})


async def attack(browser: Browser, url: str) -> dict[str, Any]:
    """Open ``url`` (an attack page) and wait for what its script managed."""
    await browser.get(url)
    result: dict[str, Any] = await browser.wait_js("window.__attack")
    return result


async def registrations(browser: Browser) -> int:
    """Service workers registered on the daemon's origin (the page open is the admin page)."""
    count: int = await browser.js_async(
        "const done = arguments[arguments.length - 1];"
        "navigator.serviceWorker.getRegistrations().then(r => done(r.length), () => done(-1));"
    )
    return count


async def add_tunnel(nursery: trio.Nursery, daemon: RunningDaemon, evil: EvilSite) -> None:
    """Register tunnel client ``evil`` whose local app is the attacker's site; run its agent."""
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as http:
        added = await http.post("/_api/tunnel/clients", json={"id": "evil"})
    assert added.status_code == 201, added.text
    config = AgentConfig(
        server=daemon.url, client_id="evil", secret=added.json()["secret"], target=evil.url
    )
    agent = Agent(config)
    nursery.start_soon(agent.run)
    with trio.fail_after(5):
        await agent.wait_sessions(1)


async def install_market_page(
    daemon: RunningDaemon, nursery: trio.Nursery, evil: EvilSite, root: Path
) -> None:
    """Install and enable marketplace service ``evilsvc``: its main page is the attack page."""
    market = await start_marketplace(nursery, root)
    files = {"main.html": evil.attack_page("/evilsvc/sw"), "sw.js": evil.worker()}
    endpoints = [
        {"path": "main", "file": "main.html", "type": "client"},
        {"path": "sw", "file": "sw.js", "type": "client", "contentType": "text/javascript"},
    ]
    market.publish("evilsvc", "1.0.0", files, endpoints=endpoints)
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as http:
        added = await http.post("/_api/marketplace/url", json={"url": market.url})
        assert added.status_code == 200, added.text
        installed = await http.post(
            "/_api/marketplace/install", json={"name": "evilsvc", "url": market.url}
        )
        assert installed.status_code == 200, installed.text
        enabled = await http.post("/_api/services/evilsvc/enable")
        assert enabled.status_code == 200, enabled.text


async def test_a_page_on_another_origin_cannot_manage(
    start_daemon: StartDaemon, open_browser: OpenBrowser, nursery: trio.Nursery
) -> None:
    daemon = await start_daemon()
    evil = await start_evil_site(nursery, daemon.url)
    browser = await open_browser()
    with trio.fail_after(60):
        await browser.get(daemon.admin_login_url)  # the admin is logged in: its cookie is there
        await browser.wait_js(ADMIN_PAGE_LOADED)
        # 127.0.0.1 on another port: another origin but the same site, so even a SameSite
        # cookie goes along; the Origin check must refuse it.
        done = await attack(browser, evil.url + "/csrf")
        assert done["plain"] == "sent" and done["disable"] == "sent", done
        assert done["json"] == "blocked", done  # no CORS: the preflight fails
        await browser.js("document.getElementById('form').submit()")
        await browser.wait_js(f"location.href.startsWith({daemon.url!r})")
        answer = json.loads(await browser.js("return document.body.innerText"))
        assert answer["error"] == "origin_not_allowed", answer
    assert daemon.hub.tunnels.registry.all() == []
    assert daemon.hub.services.get("chat").enabled  # type: ignore[union-attr]


async def test_untrusted_content_cannot_manage_nor_steal_the_admin_token(
    start_daemon: StartDaemon, open_browser: OpenBrowser, nursery: trio.Nursery, tmp_path: Path
) -> None:
    daemon = await start_daemon(marketplace={"allow_private_addresses": True})
    evil = await start_evil_site(nursery, daemon.url)
    await add_tunnel(nursery, daemon, evil)
    await install_market_page(daemon, nursery, evil, tmp_path / "market")
    host, uuid = await create_room(daemon, "fileshare", "Files")
    member = await join_room(daemon, uuid, "mallory", service="fileshare", host=host)
    nursery.start_soon(answer_downloads, member, evil)
    program = await connect(daemon)
    await send(program, "register", {"name": "evilprog"}, msg_id="r")
    assert (await recv(program))["payload"]["success"]
    nursery.start_soon(answer_program, program, evil)
    pages = {
        "404 download": daemon.url + "/fileshare/download/mallory/page",
        "registered program": daemon.url + "/evilprog/page",
        "tunnelled app": daemon.url + "/_t/evil/page",
        "tunnelled app with its own sandbox": daemon.url + "/_t/evil/escape",
        "marketplace page": daemon.url + "/evilsvc/main",
    }
    browser = await open_browser()
    with trio.fail_after(90):
        # Before the admin comes: each page tries to plant a service worker over the origin.
        for name, url in pages.items():
            done = await attack(browser, url)
            assert done["sw"].startswith("refused"), (name, done)
            assert done["read"] != 200, (name, done)
        # The admin logs in with the URL the daemon logged.
        await browser.get(daemon.admin_login_url)
        await browser.wait_js(ADMIN_PAGE_LOADED)
        assert await browser.js("return location.href") == daemon.url + "/admin"
        assert daemon.admin_token not in await browser.js("return document.cookie")
        assert await registrations(browser) == 0
        # With the admin's cookie in the browser, the pages try again.
        for name, url in pages.items():
            done = await attack(browser, url)
            assert done["read"] != 200 and done["write"] != 201, (name, done)
            assert daemon.admin_token not in json.dumps(done), name
        await browser.get(daemon.url + "/admin")
        await browser.wait_js(ADMIN_PAGE_LOADED)
        assert await registrations(browser) == 0
    assert [record.id for record in daemon.hub.tunnels.registry.all()] == ["evil"]
    assert not [entry for entry in evil.loot if daemon.admin_token in entry]
    assert not [entry for entry in evil.loot if entry.startswith("/steal")]


async def test_management_on_a_host_of_its_own(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon(admin={"host": "admin.localhost"})
    admin_url = f"http://admin.localhost:{daemon.port}"
    public = {"Host": f"127.0.0.1:{daemon.port}"}
    on_admin = {"Host": f"admin.localhost:{daemon.port}"}
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as client:
        for method, path in [("GET", "/admin"), ("POST", "/_api/services/chat/disable")]:
            refused = await client.request(method, path, headers=public)
            assert refused.status_code == 421, path
            assert refused.json()["error"] == "misdirected_request"
        assert (await client.get("/_api/services", headers=public)).status_code == 200
        assert (await client.get("/chat/main", headers=on_admin)).status_code == 200
        for path in ("/_t/evil/page", "/fileshare/download/m/page"):
            refused = await client.get(path, headers=on_admin)
            assert refused.status_code == 421, path
        assert (await client.get("/_t/evil/page", headers=public)).status_code == 404
    printed = await admin(daemon, "--json", "admin", "token")
    login = json.loads(printed.stdout)["url"]
    assert login == f"{admin_url}/admin#admin_token={daemon.admin_token}"
    browser = await open_browser()
    with trio.fail_after(40):
        await browser.get(login)
        await browser.wait_js(ADMIN_PAGE_LOADED)
        await browser.click('tr[data-service="chat"] button.disable')
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"chat\"] .state')?.textContent === 'disabled'"
        )
    assert not daemon.hub.services.get("chat").enabled  # type: ignore[union-attr]


HOST_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<script src="/libwstun.js"></script></head><body><p id="room"></p><script>
const host = WSTun.createInstanceHost({ service: "roomsvc", name: "Sandboxed",
  onInstanceCreated: p => { document.getElementById("room").textContent = p.uuid; } });
host.connect();
</script></body></html>"""


async def test_a_sandboxed_marketplace_page_still_hosts_a_room(
    start_daemon: StartDaemon, open_browser: OpenBrowser, nursery: trio.Nursery, tmp_path: Path
) -> None:
    market = await start_marketplace(nursery, tmp_path / "market")
    market.publish("roomsvc", "1.0.0", {"service.html": HOST_PAGE})
    daemon = await start_daemon(marketplace={"urls": [market.url]})
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as http:
        installed = await http.post("/_api/marketplace/install", json={"name": "roomsvc"})
        assert installed.status_code == 200, installed.text
        assert (await http.post("/_api/services/roomsvc/enable")).status_code == 200
        page = await http.get("/roomsvc/service")
        assert page.headers.get_list("Content-Security-Policy")[-1].startswith("sandbox ")
    browser = await open_browser()
    with trio.fail_after(40):
        await browser.get(daemon.url + "/roomsvc/service")
        uuid = await browser.wait_js("document.getElementById('room').textContent")
        assert await browser.js("return self.origin") == "null"  # an opaque origin
    assert daemon.hub.instances[uuid].name == "Sandboxed"
