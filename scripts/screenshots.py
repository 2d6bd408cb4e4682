"""Take the screenshots under docs/screenshots/ from a real daemon and headless Chromium.

Run from the repository root: ``.venv/bin/python scripts/screenshots.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from wstund.daemon import Daemon  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


async def start(browsers: list[Browser], *, mobile: bool = False) -> Browser:
    browser = await trio.to_thread.run_sync(lambda: Browser(mobile=mobile))
    browsers.append(browser)
    return browser


async def join(user: Browser, link: str, name: str) -> None:
    await user.get(link)
    await user.type("#name", name)
    await user.click("#join")
    await user.wait_js("document.getElementById('join-form').style.display === 'none'")


async def chat(url: str, browsers: list[Browser]) -> None:
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


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as state:
        config = make_config(Path(state), {"admin": {"socket": f"{state}/admin.sock"}})
        daemon = Daemon(config)
        browsers: list[Browser] = []
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(daemon.run)
            url = "http://127.0.0.1:" + binds[0].rsplit(":", 1)[1]
            try:
                with trio.fail_after(90):
                    await chat(url, browsers)
                    await fileshare(url, browsers, Path(state))
            finally:
                for browser in browsers:
                    await trio.to_thread.run_sync(browser.close)
                daemon.stop()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))


if __name__ == "__main__":
    trio.run(main)
