"""The ``/`` server page and the ``/admin`` page in headless Chromium against a real daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from .browser import Browser
from .conftest import StartDaemon, create_room, expect_closed, join_room, recv
from .marketplace_server import start_marketplace

OpenBrowser = Callable[..., Awaitable[Browser]]


async def test_server_page_lists_services_and_links_carry_the_token(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon(server={"token": "srv-secret"})
    browser = await open_browser()
    with trio.fail_after(40):
        host, uuid = await create_room(daemon, "chat", "Lobby", query="token=srv-secret")
        await browser.get(daemon.url + "/?token=srv-secret")
        await browser.wait_js("document.body.dataset.loaded === '1'")
        assert "v" in await browser.text("#version")
        rooms = await browser.text('tr[data-service="chat"] .rooms')
        assert rooms == "1"
        assert await browser.text('tr[data-service="fileshare"] .state') == "enabled"
        href = await browser.js(
            "return document.querySelector('tr[data-service=\"chat\"] a.host-link').href"
        )
        assert href == daemon.url + "/chat/service?token=srv-secret"
        # No admin powers on the server page, and no token means no state.
        assert await browser.js("return document.querySelectorAll('button').length") == 0
        await browser.click('tr[data-service="chat"] a.user-link')
        await browser.wait_js("location.pathname === '/chat/main'")
        assert await browser.js("return document.title") != ""
        # The page follows the server's state: a disabled service shows no page links.
        daemon.hub.set_service_enabled("fileshare", False)
        await browser.get(daemon.url + "/?token=srv-secret")
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"fileshare\"] .state')"
            "?.textContent === 'disabled'"
        )
        links = "return document.querySelectorAll('tr[data-service=\"fileshare\"] a').length"
        assert await browser.js(links) == 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.url + "/")).status_code == 401
            # /admin asks a browser for the admin token (the server token is not enough).
            prompt = await client.get(
                daemon.url + "/admin?token=srv-secret", headers={"Accept": "text/html"}
            )
            assert prompt.status_code == 401 and 'name="admin_token"' in prompt.text
        # The admin link leads to the login page; the logged login URL opens the admin page.
        await browser.click("#admin-link")
        await browser.wait_js("location.pathname === '/admin'")
        await browser.find("#token-form")
        await browser.get(daemon.admin_login_url)
        await browser.wait_js("document.body.dataset.loaded === '1'")
        assert await browser.text('tr[data-service="chat"] .rooms') == "1"
        await host.aclose()


async def test_admin_disables_a_service_closes_a_room_and_kicks_a_member(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon()
    browser = await open_browser()
    with trio.fail_after(50):
        chat_host, chat_room = await create_room(daemon, "chat", "Chat room")
        share_host, share_room = await create_room(daemon, "fileshare", "Share room")
        kept_host, kept_room = await create_room(daemon, "chat", "Kept room")
        member = await join_room(daemon, kept_room, "alice", host=kept_host)
        await browser.get(daemon.admin_login_url)
        await browser.find(f'tr[data-room="{chat_room}"]')
        assert await browser.text('tr[data-service="chat"] .rooms') == "2"

        # Disable fileshare: its host is told and its room goes from the page.
        await browser.click('tr[data-service="fileshare"] button.disable')
        told = await recv(share_host)
        assert told["type"] == "service_disabled", told
        assert told["payload"]["serviceName"] == "fileshare"
        gone = await recv(share_host)
        assert gone["type"] == "instance_destroyed", gone
        await browser.wait_js(f"!document.querySelector('tr[data-room=\"{share_room}\"]')")
        assert await browser.text('tr[data-service="fileshare"] .state') == "disabled"
        assert not daemon.hub.services.get("fileshare").enabled  # type: ignore[union-attr]

        # Close one chat room: its host gets instance_destroyed, the other room stays.
        await browser.click(f'tr[data-room="{chat_room}"] button.close')
        closed = await recv(chat_host)
        assert closed["type"] == "instance_destroyed", closed
        await browser.wait_js(f"!document.querySelector('tr[data-room=\"{chat_room}\"]')")
        assert chat_room not in daemon.hub.instances and kept_room in daemon.hub.instances

        # Kick alice: her socket closes with 4003, the owner hears of it, the page drops her.
        await browser.find(f'tr[data-room="{kept_room}"] [data-user="alice"]')
        await browser.click(f'tr[data-room="{kept_room}"] [data-user="alice"] button.kick')
        assert await expect_closed(member) == 4003
        left = await recv(kept_host)
        assert left["type"] == "client_disconnected" and left["payload"]["userId"] == "alice"
        await browser.wait_js(
            f'!document.querySelector(\'tr[data-room="{kept_room}"] [data-user="alice"]\')'
        )
        # Enabling again is a button too.
        await browser.click('tr[data-service="fileshare"] button.enable')
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"fileshare\"] .state')"
            "?.textContent === 'enabled'"
        )
        assert daemon.hub.services.get("fileshare").enabled  # type: ignore[union-attr]


async def test_admin_page_prompts_for_the_admin_token(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon(server={"admin_token": "adm-secret"})
    browser = await open_browser()
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            page = await client.get("/admin", headers={"Accept": "text/html"})
            assert page.status_code == 401 and "admin_token" in page.text
            assert page.headers["content-type"].startswith("text/html")
            plain = await client.get("/admin", headers={"Accept": "application/json"})
            assert plain.status_code == 403 and plain.json()["error"] == "forbidden"

        await browser.get(daemon.url + "/admin")
        await browser.type("#admin_token", "wrong")
        await browser.click("#token-form button")
        await browser.wait_js("document.getElementById('message').textContent.includes('not')")
        assert "not accepted" in await browser.text("#token-form")
        await browser.type("#admin_token", "adm-secret")
        await browser.click("#token-form button")
        await browser.wait_js("document.body.dataset.loaded === '1'")
        # The page's API calls carry the token: a write works.
        await browser.click('tr[data-service="chat"] button.disable')
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"chat\"] .state')?.textContent === 'disabled'"
        )
        assert not daemon.hub.services.get("chat").enabled  # type: ignore[union-attr]


async def test_admin_marketplace_adds_url_installs_updates_and_removes(
    start_daemon: StartDaemon, open_browser: OpenBrowser, nursery: trio.Nursery, tmp_path: Path
) -> None:
    market = await start_marketplace(nursery, tmp_path / "market")
    market.publish("echo", "1.0.0", {"service.html": b"<p>v1</p>", "main.html": b"<p>u1</p>"})
    daemon = await start_daemon(marketplace={"allow_private_addresses": True})  # on loopback
    browser = await open_browser()
    with trio.fail_after(50):
        await browser.get(daemon.admin_login_url)
        await browser.wait_js("document.body.dataset.loaded === '1'")
        await browser.type("#market-url", market.url + "/")
        await browser.click("#market-url-form button")
        await browser.wait_js(
            f"document.querySelector('#market-urls').textContent.includes({market.url!r})"
        )
        await browser.click("#market-browse")
        await browser.find('tr[data-market="echo"] button.install')
        assert await browser.text('tr[data-market="echo"] .available') == "1.0.0"
        await browser.click('tr[data-market="echo"] button.install')
        # Installed services start disabled and show up in the services list.
        await browser.find('tr[data-service="echo"]')
        assert await browser.text('tr[data-service="echo"] .state') == "disabled"
        assert await browser.text('tr[data-service="echo"] .version') == "1.0.0"
        service = daemon.hub.services.get("echo")
        assert service is not None and service.version == "1.0.0" and not service.enabled

        # A newer version: the page offers the update and installs it.
        market.publish("echo", "2.0.0", {"service.html": b"<p>v2</p>", "main.html": b"<p>u2</p>"})
        await browser.click("#market-browse")
        await browser.click('tr[data-market="echo"] button.update')
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"echo\"] .version')?.textContent === '2.0.0'"
        )
        await browser.wait_js(
            "document.querySelector('tr[data-market=\"echo\"] .installed')"
            "?.textContent.startsWith('2.0.0')"
        )
        await browser.click('tr[data-service="echo"] button.enable')
        await browser.wait_js(
            "document.querySelector('tr[data-service=\"echo\"] .state')?.textContent === 'enabled'"
        )
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            assert (await client.get("/echo/service")).text == "<p>v2</p>"

        # Remove (after the confirm dialog): gone from the list and from the server.
        await browser.js("window.confirm = () => true")
        await browser.click('tr[data-service="echo"] button.remove')
        await browser.wait_js("!document.querySelector('tr[data-service=\"echo\"]')")
        assert daemon.hub.services.get("echo") is None
        await browser.find('tr[data-market="echo"] button.install')
