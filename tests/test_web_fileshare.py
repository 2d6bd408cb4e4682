"""The built-in fileshare pages in real Chromiums: a 20 MB file goes from one user's page to
another user's download folder through the relay, byte-identical; nothing is stored server-side.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from .browser import Browser
from .conftest import RunningDaemon

OpenBrowser = Callable[..., Awaitable[Browser]]
SIZE = 20 * 1024 * 1024


async def create_room(host: Browser, url: str) -> str:
    await host.get(url + "/fileshare/service")
    await host.click("#create")
    await host.wait_js("document.getElementById('link').value")
    return str(await host.js("return document.getElementById('link').value"))


async def join(user: Browser, link: str, name: str) -> None:
    await user.get(link)
    await user.type("#name", name)
    await user.click("#join")
    await user.wait_js("document.getElementById('room').classList.contains('on')")


async def downloaded(browser: Browser, name: str, size: int) -> Path:
    """Wait until Chromium has finished writing ``name`` into its download folder."""
    target = browser.downloads / name
    for _ in range(1200):
        partial = list(browser.downloads.glob("*.crdownload"))
        if target.exists() and not partial and target.stat().st_size == size:
            return target
        await trio.sleep(0.05)
    raise AssertionError(f"no complete download: {list(browser.downloads.iterdir())}")


def files_of_size(root: Path, size: int, besides: tuple[Path, ...]) -> list[Path]:
    """Files under ``root`` (the daemon's state directory) at least ``size`` bytes long."""
    found = (f for f in root.rglob("*") if f.is_file() and f not in besides)
    return [f for f in found if f.stat().st_size >= size]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def test_share_20mb_file_between_two_browsers(
    wstund: RunningDaemon, open_browser: OpenBrowser, tmp_path: Path
) -> None:
    source = tmp_path / "big file.bin"
    source.write_bytes(os.urandom(SIZE))
    small = tmp_path / "notes.txt"
    small.write_bytes(os.urandom(300_000))
    with trio.fail_after(80):
        host, sender, receiver = await open_browser(), await open_browser(), await open_browser()
        link = await create_room(host, wstund.url)
        await join(sender, link, "Sam")
        await join(receiver, link, "Rita")

        file_input = await sender.call(
            lambda: sender.driver.find_element("css selector", "#file-input")
        )
        await sender.call(file_input.send_keys, f"{source}\n{small}")
        # The host and the other member see both files, with the sharer's name.
        await host.wait_js("document.querySelectorAll('#files tr').length === 2")
        await receiver.wait_js("document.querySelectorAll('#files .file').length === 2")
        assert "Sam" in await receiver.text("#files .file .meta")

        # Binary frames: the 20 MB file.
        await receiver.click("#files .file[data-file] a.download")
        path = await downloaded(receiver, source.name, SIZE)
        assert sha256(path) == sha256(source)
        # The server only held a window's worth of the bytes at a time, and keeps nothing.
        relay = wstund.hub.http_relay
        assert 0 < relay.peak_buffered < SIZE // 2
        assert not files_of_size(tmp_path, SIZE, besides=(source, small))
        for _ in range(100):
            if not relay.exchanges:
                break
            await trio.sleep(0.05)
        assert not relay.exchanges
        # Progress on both sides.
        await sender.wait_js(
            "document.querySelector('#mine .transfer .ptext')?.textContent"
            ".startsWith('Sent 20.0 MB')"
        )
        await receiver.wait_js(
            "[...document.querySelectorAll('#files progress')].some(p => p.value === p.max)"
        )
        await host.wait_js("document.getElementById('files').textContent.includes('sent 20.0 MB')")

        # Base64 chunks (a sender page without binary frames): the small file.
        await sender.js("window.fileshareUseBinary = false")
        await receiver.click("#files .file:nth-child(2) a.download")
        small_path = await downloaded(receiver, small.name, small.stat().st_size)
        assert small_path.read_bytes() == small.read_bytes()

        # The sender leaves: its files disappear from the room, and a download is a JSON 503.
        await sender.get("about:blank")
        await receiver.wait_js("document.querySelectorAll('#files .file').length === 0")
        await host.wait_js("document.querySelectorAll('#files tr').length === 0")

        # The host kicks the other member: its page says so.
        await host.wait_js("document.getElementById('count').textContent === '1'")
        await host.click("#members li[data-user] .kick")
        await receiver.wait_js("document.getElementById('ended')?.textContent.includes('removed')")
        assert await receiver.js("return document.getElementById('file-input').disabled")


async def test_sender_honours_backpressure_and_abort(
    start_daemon: Callable[..., Awaitable[RunningDaemon]],
    open_browser: OpenBrowser,
    tmp_path: Path,
) -> None:
    """A downloader that stops reading stalls the sender's page; one that leaves stops it."""
    daemon = await start_daemon(http_relay={"window": 256 * 1024})
    big = tmp_path / "stalled.bin"
    big.write_bytes(os.urandom(48 * 1024 * 1024))
    with trio.fail_after(60):
        host, sender = await open_browser(), await open_browser()
        reader = await open_browser(mobile=True)
        link = await create_room(host, daemon.url)
        await join(sender, link, "Sam")
        field = await sender.call(lambda: sender.driver.find_element("css selector", "#file-input"))
        await sender.call(field.send_keys, str(big))
        # A late joiner learns the shared file from its peers (request_state/state_response).
        await join(reader, link, "Rita")
        await reader.wait_js("document.querySelectorAll('#files .file').length === 1")
        assert await reader.js(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ), "the user page is wider than the phone"
        href = await reader.js("return document.querySelector('#files .file a.download').href")
        sent = "Object.values(window.fileshareTransfers)[0]?.sent || 0"
        # A downloader that reads the first bytes and then stops reading (Chromium's own fetch
        # buffers without bound, so the slow reader here is a plain HTTP client).
        async with httpx.AsyncClient() as client, client.stream("GET", href) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            assert await chunks.__anext__()
            await sender.wait_js(f"{sent} > 0")
            previous = -1
            for _ in range(100):
                now = await sender.js(f"return {sent}")
                if now == previous:
                    break
                previous = now
                await trio.sleep(0.3)
            assert previous < big.stat().st_size // 2, "the sender did not wait for the reader"
        # The reader went away: the server aborts and the sender's page stops for good.
        await sender.wait_js("Object.values(window.fileshareTransfers)[0].state === 'cancelled'")
        await sender.wait_js(
            "document.querySelector('#mine .transfer .ptext').textContent"
            ".startsWith('Download cancelled at')"
        )
        assert await sender.js(f"return {sent}") < big.stat().st_size
