"""Pages written in the reference's style, published with the reference's documented manifest
(``"path": "/service"``), driven in real Chromiums: create, join, a refused join whose error
stays on screen, chat, a 5 MB download through the page's own one-segment link, kick, and the
controller page taking its room back after a reload while another browser cannot."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from .browser import Browser
from .conftest import StartDaemon
from .marketplace_server import start_marketplace
from .test_web_fileshare import downloaded, sha256

OpenBrowser = Callable[..., Awaitable[Browser]]
PAGES = Path(__file__).parent / "reference_style"
# The manifest exactly as the reference marketplace documentation writes it.
DOCUMENTED_ENDPOINTS = [
    {"path": "/service", "file": "index.html", "type": "service"},
    {"path": "/main", "file": "main.html", "type": "client"},
]


async def _install(
    nursery: trio.Nursery, tmp_path: Path, start_daemon: StartDaemon, *, trusted: bool = True
) -> str:
    """Publish the pages, install and enable them on a fresh daemon; its base URL. Trusted
    (``marketplace.trusted_services``), the pages run on the server's origin with Web Storage;
    otherwise sandboxed."""
    market = await start_marketplace(nursery, tmp_path / "market")
    files = {name: (PAGES / name).read_bytes() for name in ("index.html", "main.html")}
    market.publish("refshare", "1.0.0", files, endpoints=DOCUMENTED_ENDPOINTS)
    daemon = await start_daemon(
        marketplace={"urls": [market.url], "trusted_services": ["refshare"] if trusted else []},
        relay={"owner_grace": 30.0},
    )
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as api:
        installed = await api.post("/_api/marketplace/install", json={"name": "refshare"})
        assert installed.status_code == 200, installed.text
        assert (await api.post("/_api/services/refshare/enable")).status_code == 200
        page = await api.get("/refshare/service")
        assert page.content == files["index.html"]
        assert ("sandbox" in page.headers.get("content-security-policy", "")) is not trusted
        assert (await api.get("/refshare/main")).content == files["main.html"]
    return daemon.url


def _status_is(text: str) -> str:
    return f"document.getElementById('status').textContent === {text!r}"


async def test_reference_style_pages_end_to_end(
    nursery: trio.Nursery,
    start_daemon: StartDaemon,
    open_browser: OpenBrowser,
    tmp_path: Path,
) -> None:
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024))
    with trio.fail_after(120):
        url = await _install(nursery, tmp_path, start_daemon)
        host, ann, bob = await open_browser(), await open_browser(), await open_browser()

        await host.get(url + "/refshare/service")
        await host.type("#roomName", "Reference room")
        await host.type("#roomToken", "pw")
        await host.click("#create")
        link = str(
            await host.js_async(
                "const done = arguments[0];"
                "const t = setInterval(() => { const a = document.getElementById('joinUrl');"
                " if (a) { clearInterval(t); done(a.href); } }, 50);"
            )
        )
        assert link.startswith(url + "/refshare/main#instance=") and link.endswith("&token=pw")

        await ann.get(link)
        await ann.click("#join")
        await ann.wait_js(_status_is("Connected to Reference room"))

        # A wrong password: the page shows the reference's error and it stays there once the
        # library has closed its socket (no "Disconnected" replaces it).
        await bob.get(link.replace("&token=pw", ""))
        await bob.type("#instanceToken", "wrong")
        await bob.click("#join")
        await bob.wait_js(_status_is("Error: Invalid instance token"))
        await bob.wait_js("window.client.ws === null")
        assert await bob.js("return document.getElementById('status').textContent") == (
            "Error: Invalid instance token"
        )
        await bob.type("#instanceToken", "pw")
        await bob.click("#join")
        await bob.wait_js(_status_is("Connected to Reference room"))
        await host.wait_js("document.querySelectorAll('#users li').length === 2")

        await ann.type("#chatText", "hello bob")
        await ann.click("#chatSend")
        await bob.wait_js("document.getElementById('messages').textContent.includes('hello bob')")

        # Ann shares 5 MB; Bob downloads it through the page's own link, byte-identical.
        field = await ann.call(lambda: ann.driver.find_element("css selector", "#fileInput"))
        await ann.call(field.send_keys, str(source))
        href = await bob.wait_js(
            "document.querySelector('#allFiles a.download')?.getAttribute('href')"
        )
        assert href.startswith("/fileshare/download/") and "%2F" in href and href.count("/") == 3
        await bob.click("#allFiles a.download")
        path = await downloaded(bob, source.name, source.stat().st_size)
        assert sha256(path) == sha256(source)

        # The host kicks Bob.
        bob_id = await bob.js("return window.client.userId")
        await host.click(f"#users li[data-user='{bob_id}'] .kick")
        await bob.wait_js(
            "document.getElementById('notice').textContent.includes('You have been kicked')"
        )

        # The host's socket drops; Bob (another browser, who knows uuid and password) cannot
        # take the room, the host's page reloaded (the reference's sessionStorage reclaim) can.
        uuid = link.split("instance=")[1].split("&")[0]
        await host.js("activeHost.disconnect()")
        refusal = await bob.js_async(
            """
            const [uuid, done] = arguments;
            const away = async () => (await WSTun.listInstances('fileshare'))
                .some(i => i.uuid === uuid && !i.ownerConnected);
            const attempt = async () => {
                if (!(await away())) { setTimeout(attempt, 50); return; }
                const ws = new WebSocket(WSTun.buildWsUrl());
                ws.onopen = () => ws.send(JSON.stringify({type: 'reclaim_instance',
                    service: 'fileshare', payload: {uuid: uuid, token: 'pw', server_token: null}}));
                ws.onmessage = (e) => done(JSON.parse(e.data));
            };
            attempt();
            """,
            uuid,
        )
        assert refusal["type"] == "error" and refusal["payload"]["code"] == "not_owner"
        await host.call(host.driver.refresh)
        await host.wait_js(f"document.getElementById('reclaimed')?.textContent.includes({uuid!r})")


async def test_sandboxed_reference_style_pages_still_run(
    nursery: trio.Nursery,
    start_daemon: StartDaemon,
    open_browser: OpenBrowser,
    tmp_path: Path,
) -> None:
    """Not trusted, the same pages are sandboxed (an opaque origin, where reading
    sessionStorage throws): libwstun.js's in-memory storage lets them create, join and chat."""
    with trio.fail_after(60):
        url = await _install(nursery, tmp_path, start_daemon, trusted=False)
        host, ann, bob = await open_browser(), await open_browser(), await open_browser()
        await host.get(url + "/refshare/service")
        assert await host.js("return self.origin") == "null"
        await host.type("#roomName", "Sandboxed room")
        await host.click("#create")
        link = await host.wait_js("document.getElementById('joinUrl')?.href")
        for member in (ann, bob):
            await member.get(link)
            await member.click("#join")
            await member.wait_js(_status_is("Connected to Sandboxed room"))
        await host.wait_js("document.querySelectorAll('#users li').length === 2")
        await ann.type("#chatText", "from a sandbox")
        await ann.click("#chatSend")
        await bob.wait_js(
            "document.getElementById('messages').textContent.includes('from a sandbox')"
        )
