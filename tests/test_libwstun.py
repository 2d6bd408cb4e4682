"""libwstun.js in Chromium: the reference API, a page written for the reference, reconnects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import trio

from .browser import Browser
from .conftest import RunningDaemon
from .test_web_chat import create_room, join, log_has, say

OpenBrowser = Callable[..., Awaitable[Browser]]

# The reference documentation's own example, lightly trimmed: host and member in one page.
REFERENCE_STYLE = """
const done = arguments[arguments.length - 1];
const seen = [];
const host = WSTun.createInstanceHost({
    service: 'fileshare', name: 'My FileShare Room', instanceToken: 'secretpass',
    onInstanceCreated: (payload) => {
        seen.push('created:' + payload.name);
        const client = WSTun.createInstanceClient({
            service: 'fileshare', instanceUuid: payload.uuid, instanceToken: 'secretpass',
            userId: WSTun.generateId(),
            onJoined: (p) => {
                seen.push('joined:' + p.instanceName);
                client.send('file_register', {fileId: 'f1', filename: 'a.txt', size: 3});
            },
            onMessage: (msg) => {
                if (msg.type === 'file_list') {
                    seen.push('list:' + msg.payload.files.length);
                    host.kickUser(client.userId);
                }
            },
            onKicked: (p) => { seen.push('kicked'); },
            onClose: () => { seen.push('closed'); done(seen); },
            onError: (err) => { seen.push('error:' + err.message); done(seen); },
        });
        client.connect();
    },
    onMessage: (msg) => {
        if (msg.type === 'file_register') {
            host.broadcast('file_list', {files: [msg.payload]});
        } else if (msg.type === 'client_connected') {
            seen.push('member');
        }
    },
    onError: (err) => { seen.push('host error:' + err.message); done(seen); },
});
host.connect();
"""


async def test_reference_api_names_and_page(
    wstund: RunningDaemon, open_browser: OpenBrowser
) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            served = await http.get(wstund.url + "/libwstun.js")
        assert served.status_code == 200
        assert "javascript" in served.headers["content-type"]
        assert "max-age" in served.headers.get("cache-control", "")

        browser = await open_browser()
        await browser.get(wstund.url + "/chat/main")
        api = await browser.js(
            """
            const h = WSTun.createInstanceHost({service: 'chat'});
            const c = WSTun.createInstanceClient({service: 'chat', instanceUuid: 'x'});
            const names = o => ['connect', 'disconnect', 'send', 'broadcast', 'kickUser',
                                'sendTo', 'sendBinary', 'request']
                               .filter(n => typeof o[n] === 'function');
            return {version: typeof WSTun.version, id: WSTun.generateId(),
                    url: WSTun.buildWsUrl('a b'), list: typeof WSTun.listInstances,
                    host: names(h), client: names(c), userId: typeof c.userId};
            """
        )
        assert api["version"] == "string"
        assert len(api["id"]) == 16
        assert api["url"] == wstund.ws_url("/ws") + "?token=a%20b"
        assert api["list"] == "function"
        assert api["host"] == [
            "connect",
            "disconnect",
            "send",
            "broadcast",
            "kickUser",
            "sendTo",
            "sendBinary",
            "request",
        ]
        assert {"connect", "disconnect", "send"} <= set(api["client"])
        assert api["userId"] == "string"

        seen = await browser.js_async(REFERENCE_STYLE)
        # The host's client_connected and the member's ack race each other.
        assert seen[0] == "created:My FileShare Room"
        assert sorted(seen[1:3]) == ["joined:My FileShare Room", "member"]
        assert seen[3:] == ["list:1", "kicked", "closed"]
        listed = await browser.js_async(
            "const done = arguments[arguments.length - 1];"
            "WSTun.listInstances('fileshare').then(done, e => done('error ' + e.message));"
        )
        assert [(room["name"], room["hasToken"]) for room in listed] == [
            ("My FileShare Room", True)
        ]

        # Promise helpers and sendTo: the host asks, a member answers; replies correlate by id.
        result = await browser.js_async(
            """
            const done = arguments[arguments.length - 1];
            const host = WSTun.createInstanceHost({service: 'chat', name: 'p',
              onInstanceCreated: async (created) => {
                const pong = await host.request('ping', {});
                const got = [];
                const mk = (id) => WSTun.createInstanceClient({service: 'chat',
                    instanceUuid: created.uuid, userId: id,
                    onJoined: () => { if (++joined === 2) host.sendTo('u1', 'only_u1', {n: 1}); },
                    onMessage: (m) => {
                        got.push(id + ':' + m.type);
                        if (id === 'u1') setTimeout(() => done({pong, got}), 300);
                    }});
                let joined = 0;
                mk('u1').connect(); mk('u2').connect();
              }});
            host.connect();
            """
        )
        assert result == {"pong": {}, "got": ["u1:only_u1"]}


async def test_host_reclaims_room_after_its_socket_is_cut(
    start_daemon: Callable[..., Awaitable[RunningDaemon]], open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon(relay={"owner_grace": 10.0})
    with trio.fail_after(60):
        host, user = await open_browser(), await open_browser()
        link = await create_room(host, daemon.url, "Sturdy")
        await join(user, link, "Uma")
        await host.wait_js(log_has(" joined"))
        (room,) = daemon.hub.instances_of("chat")
        first_owner = room.owner
        assert first_owner is not None

        # Cut the host's socket from the server side, without a close handshake reaching it.
        first_owner.close(1011, "cut by test", flush=False)
        await host.wait_js("document.getElementById('conn').textContent.includes('Reconnected')")
        assert room.owner is not None and room.owner is not first_owner
        assert daemon.hub.instances_of("chat") == [room]

        # The member kept working across the cut, both ways.
        await say(user, "still here")
        await host.wait_js(log_has("still here"))
        await say(host, "me too")
        await user.wait_js(log_has("me too"))

        # A member whose socket is cut joins again by itself, under the same id.
        (member_id,) = room.members
        room.members[member_id].close(1011, "cut by test", flush=False)
        await user.wait_js("window.wstunClient.attempt === 0 && window.wstunClient.connected")
        for _ in range(200):
            if member_id in room.members:
                break
            await trio.sleep(0.05)
        assert member_id in room.members
        await say(user, "back again")
        await host.wait_js(log_has("back again"))
