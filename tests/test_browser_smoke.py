"""The browser harness itself: Chromium loads the daemon's pages and libwstun.js over loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .browser import Browser
from .conftest import RunningDaemon


async def test_server_page_loads_in_chromium(
    wstund: RunningDaemon, open_browser: Callable[..., Awaitable[Browser]]
) -> None:
    browser = await open_browser()
    with trio.fail_after(30):
        await browser.get(wstund.url + "/")
        assert await browser.js("return document.readyState") == "complete"
        status = await browser.js_async(
            "const done = arguments[arguments.length - 1];"
            "fetch('/_api/services').then(r => done(r.status), e => done(String(e)));"
        )
    assert status == 200
