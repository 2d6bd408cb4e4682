#!/usr/bin/env python3
"""Take the screenshots under docs/screenshots/ from a real daemon and headless Chromium.

Run from the repository root: ``.venv/bin/python scripts/screenshots.py [NAME ...]``
(names: server, admin, chat, fileshare; none means all). Add a static page by adding a
``(name, path)`` pair to ``SHOTS``; interactive pages get a scenario function in ``SCENES``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from wstund.daemon import Daemon  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
# (file name without .png, path on the daemon); a page is shot once it has loaded its data.
SHOTS: list[tuple[str, str]] = [
    ("server", "/"),
    ("admin", "/admin"),
]
# The server and admin pages mark <body data-loaded="1"> once their first API answer is drawn.
READY = "document.readyState === 'complete' && document.body.dataset.loaded === '1'"


async def envelope(ws: trio_websocket.WebSocketConnection, type_: str, **fields: Any) -> Any:
    """Send one relay message and return the reply."""
    await ws.send_message(json.dumps({"type": type_, **fields}))
    with trio.fail_after(5):
        return json.loads(await ws.get_message())


async def populate(nursery: trio.Nursery, ws_url: str) -> None:
    """A chat room with two members and a fileshare room, kept open while shooting."""
    rooms = [("chat", "Team standup", ["alice", "bob"]), ("fileshare", "Design assets", ["carol"])]
    for service, name, members in rooms:
        host = await trio_websocket.connect_websocket_url(nursery, ws_url)
        created = await envelope(
            host, "create_instance", service=service, id="c", payload={"name": name}
        )
        uuid = created["payload"]["uuid"]
        for user in members:
            member = await trio_websocket.connect_websocket_url(nursery, ws_url)
            payload = {"uuid": uuid, "userId": user}
            await envelope(member, "join_instance", service=service, id="j", payload=payload)


async def start(browsers: list[Browser], *, mobile: bool = False) -> Browser:
    """A new Chromium, closed by ``main`` at the end."""
    browser = await trio.to_thread.run_sync(lambda: Browser(mobile=mobile))
    browsers.append(browser)
    return browser


async def join(user: Browser, link: str, name: str) -> None:
    """Open a join link and enter the room under ``name``."""
    await user.get(link)
    await user.type("#name", name)
    await user.click("#join")
    await user.wait_js("document.getElementById('join-form').style.display === 'none'")


async def chat(url: str, browsers: list[Browser], files: Path) -> None:
    """A host and two users talking; the late joiner reads the history."""
    host = await start(browsers)
    await host.get(url + "/chat/service")
    await host.type("#room-name", "Design review")
    await host.click("#create")
    link = await host.wait_js("document.getElementById('link').value")
    alice, bob = await start(browsers), await start(browsers, mobile=True)
    await join(alice, link, "Alice")
    await alice.type("#msg", "Morning! The new build is up.")
    await alice.click("#send")
    await host.type("#msg", "Thanks Alice, looking now.")
    await host.click("#send")
    await join(bob, link, "Bob")
    await bob.wait_js("document.querySelectorAll('#log .msg').length === 2")
    await bob.type("#msg", "Joined late, but I can read the history.")
    await bob.click("#send")
    await host.wait_js("document.querySelectorAll('#log .msg').length === 3")
    await host.screenshot(OUT / "chat-service.png")
    await bob.screenshot(OUT / "chat-main.png")


async def fileshare(url: str, browsers: list[Browser], files: Path) -> None:
    """One user shares two files, another downloads one; progress on both sides."""
    host = await start(browsers)
    await host.get(url + "/fileshare/service")
    await host.type("#room-name", "Holiday photos")
    await host.click("#create")
    link = await host.wait_js("document.getElementById('link').value")
    sam, rita = await start(browsers), await start(browsers)
    await join(sam, link, "Sam")
    await join(rita, link, "Rita")
    for name, size in (("beach.jpg", 3_400_000), ("itinerary.pdf", 250_000)):
        (files / name).write_bytes(b"\0" * size)
    field = await sam.call(lambda: sam.driver.find_element("css selector", "#file-input"))
    await sam.call(field.send_keys, f"{files / 'beach.jpg'}\n{files / 'itinerary.pdf'}")
    await rita.wait_js("document.querySelectorAll('#files .file').length === 2")
    await rita.click("#files .file a.download")
    await rita.wait_js("[...document.querySelectorAll('#files progress')].some(p => p.value)")
    await host.wait_js("document.querySelectorAll('#files tr').length === 2")
    await host.screenshot(OUT / "fileshare-service.png")
    await rita.screenshot(OUT / "fileshare-main.png")


SCENES: dict[str, Callable[[str, list[Browser], Path], Awaitable[None]]] = {
    "chat": chat,
    "fileshare": fileshare,
}


async def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wstund-shots-") as state:
        config = make_config(Path(state), {"admin": {"socket": f"{state}/admin.sock"}})
        daemon = Daemon(config)
        browsers: list[Browser] = []
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(daemon.run)
            url = "http://127.0.0.1:" + binds[0].rsplit(":", 1)[1]
            try:
                await populate(nursery, url.replace("http", "ws", 1) + "/ws")
                pages = await start(browsers)
                for name, path in SHOTS:
                    if names and name not in names:
                        continue
                    with trio.fail_after(30):
                        if path == "/admin":  # log in with the URL the daemon logs
                            token = daemon.hub.config.server.admin_token
                            await pages.get(f"{url}/admin#admin_token={token}")
                            await pages.wait_js(READY)
                        await pages.get(url + path)
                        await pages.wait_js(READY)
                        await trio.sleep(0.5)  # let fonts and the first refresh settle
                        await pages.screenshot(OUT / f"{name}.png")
                for name, scene in SCENES.items():
                    if not names or name in names:
                        with trio.fail_after(90):
                            await scene(url, browsers, Path(state))
            finally:
                for browser in browsers:
                    await trio.to_thread.run_sync(browser.close)
                daemon.stop()
                nursery.cancel_scope.cancel()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
