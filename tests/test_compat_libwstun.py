"""libwstun.js against the reference library's surface, in Chromium: the legacy names, the
failure modes of listInstances, refusals that reach onError without onClose, and the ownerKey
the host keeps across reconnects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .browser import Browser
from .conftest import RunningDaemon, StartDaemon

OpenBrowser = Callable[..., Awaitable[Browser]]


async def test_reference_names_and_refusals(
    wstund: RunningDaemon, open_browser: OpenBrowser
) -> None:
    with trio.fail_after(40):
        browser = await open_browser()
        await browser.get(wstund.url + "/chat/main")
        names = await browser.js(
            """
            const service = WSTun.createService({service: 'chat'});
            const member = WSTun.createClient({service: 'chat', instanceUuid: 'x'});
            return {createService: typeof WSTun.createService,
                    createClient: typeof WSTun.createClient,
                    generateUserId: typeof WSTun.generateUserId(),
                    kickUser: typeof service.kickUser, broadcast: typeof service.broadcast,
                    memberUser: typeof member.userId, memberSend: typeof member.send};
            """
        )
        assert names == {
            "createService": "function",
            "createClient": "function",
            "generateUserId": "string",
            "kickUser": "function",
            "broadcast": "function",
            "memberUser": "string",
            "memberSend": "function",
        }
        # createService is a room host; a refused join and a refused legacy client reach
        # onError, and onClose does not follow (the reference's socket stays quiet too).
        seen = await browser.js_async(
            """
            const done = arguments[arguments.length - 1];
            const seen = [];
            const host = WSTun.createService({service: 'chat', name: 'S', instanceToken: 'pw',
              onInstanceCreated: (p) => {
                seen.push('created:' + p.name + ':' + (typeof p.ownerKey));
                const bad = WSTun.createClient({service: 'chat', instanceUuid: p.uuid,
                    instanceToken: 'no',
                    onJoined: () => seen.push('joined?!'),
                    onError: (e) => seen.push('join error:' + e.message + ':' + e.code),
                    onClose: () => seen.push('join close')});
                bad.connect();
                const legacy = WSTun.createClient({service: 'chat',
                    onRegistered: () => seen.push('registered?!'),
                    onError: (e) => seen.push('legacy error:' + e.code),
                    onClose: () => seen.push('legacy close')});
                legacy.connect();
                const check = () => (bad.ws === null && legacy.ws === null)
                    ? setTimeout(() => done(seen), 200) : setTimeout(check, 50);
                check();
              }});
            host.connect();
            """
        )
        assert seen[0] == "created:S:string"
        assert sorted(seen[1:]) == [
            "join error:Invalid instance token:invalid_token",
            "legacy error:unknown_type",
        ]


async def test_list_instances_settles_as_the_reference_does(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    # An origin the relay refuses: the socket opens and closes without a list -> [].
    daemon = await start_daemon(
        server={"token": "st", "allowed_origins": ["https://elsewhere.example"]}
    )
    with trio.fail_after(40):
        browser = await open_browser()
        await browser.get(daemon.url + "/chat/main?token=st")
        results = await browser.js_async(
            """
            const done = arguments[arguments.length - 1];
            const settle = (p) => p.then(v => ['resolved', v], e => ['rejected', e.message]);
            Promise.all([settle(WSTun.listInstances('chat', 'st')),
                         settle(WSTun.listInstances('chat', 'wrong'))]).then(done);
            """
        )
        assert results == [["resolved", []], ["rejected", "WebSocket connection failed"]]


async def test_host_keeps_its_owner_key_across_reconnects(
    start_daemon: StartDaemon, open_browser: OpenBrowser
) -> None:
    daemon = await start_daemon(relay={"owner_grace": 10.0})
    with trio.fail_after(40):
        browser = await open_browser()
        await browser.get(daemon.url + "/chat/main")
        await browser.js_async(
            """
            const done = arguments[arguments.length - 1];
            window.sent = [];
            const send = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
                window.sent.push(data);
                return send.call(this, data);
            };
            window.host = WSTun.createInstanceHost({service: 'chat', name: 'K',
                onInstanceCreated: () => done(),
                onInstanceReclaimed: () => { window.back = true; }});
            window.host.connect();
            """
        )
        (room,) = daemon.hub.instances_of("chat")
        assert await browser.js("return window.host.ownerKey") == room.owner_key
        assert room.owner is not None
        room.owner.close(1011, "cut by test", flush=False)
        await browser.wait_js("window.back === true")
        reclaim = await browser.js(
            "return window.sent.map(JSON.parse).find(m => m.type === 'reclaim_instance')"
        )
        assert reclaim["payload"]["ownerKey"] == room.owner_key
        assert reclaim["payload"]["uuid"] == room.uuid
