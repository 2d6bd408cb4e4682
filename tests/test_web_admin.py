"""The ``/`` server page and the ``/admin`` page in headless Chromium against a real daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import trio

from .browser import Browser
from .conftest import StartDaemon, create_room

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
        await browser.click('tr[data-service="chat"] a.user-link')
        await browser.wait_js("location.pathname === '/chat/main'")
        assert await browser.js("return document.title") != ""
        # No admin powers on the server page, and no token means no state.
        assert await browser.js("return document.querySelectorAll('button').length") == 0
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
        await host.aclose()
