#!/usr/bin/env python3
"""Screenshots of the web pages for docs/screenshots/: a real wstund, a few rooms, Chromium.

Run from the repository root: ``.venv/bin/python scripts/screenshots.py [NAME ...]``.
Add a page by adding a ``(name, path)`` pair to ``SHOTS`` (and any rooms it needs to ``populate``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402
from wstund.config import Config, validate  # noqa: E402
from wstund.daemon import Daemon  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
# (file name without .png, path on the daemon); a page is shot once it has loaded its data.
SHOTS: list[tuple[str, str]] = [
    ("server", "/"),
    ("admin", "/admin"),
]
# The server and admin pages mark <body data-loaded="1"> once their first API answer is drawn.
READY = (
    "document.readyState === 'complete' && "
    "(document.body.dataset.loaded === '1' || !['/', '/admin'].includes(location.pathname))"
)


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


async def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wstund-shots-") as state:
        data = {
            "server": {"bind": ["127.0.0.1:0"], "state_dir": state},
            "admin": {"socket": f"{state}/admin.sock"},
        }
        daemon = Daemon(validate(msgspec.convert(data, Config)))
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(daemon.run)
            port = int(binds[0].rsplit(":", 1)[1])
            await populate(nursery, f"ws://127.0.0.1:{port}/ws")
            browser = await trio.to_thread.run_sync(Browser)
            try:
                for name, path in SHOTS:
                    if names and name not in names:
                        continue
                    with trio.fail_after(30):
                        await browser.get(f"http://127.0.0.1:{port}{path}")
                        await browser.wait_js(READY)
                        await trio.sleep(0.5)  # let fonts and the first refresh settle
                        await browser.screenshot(OUT / f"{name}.png")
                    print(f"wrote {OUT / name}.png")
            finally:
                await trio.to_thread.run_sync(browser.close)
            daemon.stop()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
