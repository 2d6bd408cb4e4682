"""The built-in chat pages in real Chromiums: a host page and two user pages (separate profiles)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .browser import Browser
from .conftest import RunningDaemon

OpenBrowser = Callable[..., Awaitable[Browser]]


async def create_room(host: Browser, url: str, name: str, query: str = "") -> str:
    """Open the host page, create a room; return the join link it shows."""
    await host.get(url + "/chat/service" + query)
    await host.type("#room-name", name)
    await host.click("#create")
    await host.wait_js("document.getElementById('link').value")
    return str(await host.js("return document.getElementById('link').value"))


async def join(user: Browser, link: str, name: str) -> None:
    """Open the join link, give a name, wait until in the room."""
    await user.get(link)
    await user.type("#name", name)
    await user.click("#join")
    await user.find("#msg")


async def say(user: Browser, text: str) -> None:
    await user.type("#msg", text)
    await user.click("#send")


def log_has(text: str) -> str:
    return f"document.getElementById('log').textContent.includes({text!r})"


async def user_id(user: Browser) -> str:
    """The user id the server confirmed for a user page (its stamped sender id)."""
    return str(await user.js("return window.wstunClient.userId"))


async def test_chat_host_and_two_users(wstund: RunningDaemon, open_browser: OpenBrowser) -> None:
    with trio.fail_after(60):
        host, alice, bob = (
            await open_browser(),
            await open_browser(),
            await open_browser(mobile=True),
        )
        link = await create_room(host, wstund.url, "Team chat")
        assert link.startswith(wstund.url + "/chat/main?instance=")

        await join(alice, link, "Alice")
        aid = await user_id(alice)
        await host.wait_js(log_has(f"Alice ({aid}) joined"))
        await host.wait_js(
            "document.querySelector('#members li .member-name')?.textContent === 'Alice'"
        )
        await say(alice, "hello from alice")
        await say(host, "welcome, says the host")
        await alice.wait_js(log_has("welcome, says the host"))
        await host.wait_js(log_has("hello from alice"))

        # Bob joins late, on a phone: he gets the history from his peers and Alice sees him.
        await join(bob, link, "Bob")
        bid = await user_id(bob)
        await alice.wait_js(log_has(f"Bob ({bid}) joined"))
        await bob.wait_js(log_has("hello from alice") + " && " + log_has("welcome, says the host"))
        assert await bob.js("return document.title") == "Chat"
        assert (
            await bob.js("return document.getElementById('room-name').textContent") == "Team chat"
        )
        # Names travel with messages, next to the sender id the server stamped.
        names = await bob.js(
            "return [...document.querySelectorAll('#log .msg .name')].map(e => e.textContent)"
        )
        assert names == [f"Alice ({aid})", "Host"]
        # Phone width: the page fits without horizontal scrolling.
        assert await bob.js("return document.documentElement.scrollWidth <= window.innerWidth"), (
            "user page is wider than the phone"
        )

        await say(bob, "bob here")
        await alice.wait_js(log_has("bob here"))
        await host.wait_js(log_has("bob here"))

        # Alice leaves (closes her page): the host and Bob get a leave notice.
        await alice.get("about:blank")
        await host.wait_js(log_has(f"Alice ({aid}) left"))
        await bob.wait_js(log_has(f"Alice ({aid}) left"))
        await host.wait_js("document.getElementById('count').textContent === '1'")

        # The host kicks Bob: his page says so and he can no longer send.
        await host.click("#members li[data-user] .kick")
        await bob.wait_js("document.getElementById('ended')?.textContent.includes('removed')")
        assert await bob.js("return document.getElementById('msg').disabled")
        await host.wait_js("document.getElementById('count').textContent === '0'")
    room = wstund.hub.instances_of("chat")
    assert len(room) == 1 and not room[0].members


async def test_chat_room_token_is_required(
    wstund: RunningDaemon, open_browser: OpenBrowser
) -> None:
    with trio.fail_after(40):
        host, user = await open_browser(), await open_browser()
        await host.get(wstund.url + "/chat/service")
        await host.type("#room-token", "s3cret")
        await host.click("#create")
        await host.wait_js("document.getElementById('link').value")
        link = str(await host.js("return document.getElementById('link').value"))
        assert "room_token=s3cret" in link
        # Without the password: a clear error and a password field.
        await user.get(link.split("&")[0])
        await user.type("#name", "Eve")
        await user.click("#join")
        await user.wait_js(
            "document.getElementById('status').textContent.includes('Could not join')"
        )
        # The refusal stays on screen once the library has closed its socket.
        await user.wait_js("window.wstunClient.ws === null")
        status = await user.js("return document.getElementById('status').textContent")
        assert status == "Could not join: Invalid instance token"
        await user.type("#room-token", "s3cret")
        await user.click("#join")
        await user.find("#msg")
        await host.wait_js(log_has(f"Eve ({await user_id(user)}) joined"))


async def test_chat_with_a_server_token(
    start_daemon: Callable[..., Awaitable[RunningDaemon]], open_browser: OpenBrowser
) -> None:
    """With a server token the pages carry it from the URL to the WebSocket and the join link."""
    daemon = await start_daemon(server={"token": "srv tok"})
    with trio.fail_after(40):
        host, user = await open_browser(), await open_browser()
        link = await create_room(host, daemon.url, "Guarded", "?token=srv%20tok")
        assert "token=srv%20tok" in link
        await join(user, link, "Tess")
        await say(user, "through the token")
        await host.wait_js(log_has("through the token"))


async def test_chat_shows_the_stamped_sender_not_the_claimed_one(
    wstund: RunningDaemon, open_browser: OpenBrowser
) -> None:
    """A member posting as another (payload from/name forged) is shown with its own id."""
    with trio.fail_after(60):
        host, alice, mallory = await open_browser(), await open_browser(), await open_browser()
        link = await create_room(host, wstund.url, "Stamped")
        await join(alice, link, "Alice")
        await join(mallory, link, "Mallory")
        aid, mid = await user_id(alice), await user_id(mallory)
        await mallory.js(
            "window.wstunClient.send('chat_message', {id: 'forged-1', from: arguments[0],"
            " name: 'Alice', text: 'forged words', ts: Date.now()})",
            aid,
        )
        label = (
            "[...document.querySelectorAll('#log .msg')].find(e => e.textContent"
            ".includes('forged words'))?.querySelector('.name').textContent"
        )
        for page in (alice, host):
            shown = await page.wait_js(label)
            assert shown == f"Alice ({mid})", shown
