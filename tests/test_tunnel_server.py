"""The tunnel's server side against a real daemon: REST registry routes."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
import trio_websocket

from wstund.tunnel import frames

from .conftest import RunningDaemon, StartDaemon

ADMIN = {"X-Admin-Token": "adm"}


async def test_rest_add_list_rotate_remove(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"admin_token": "adm"})
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            refused = await client.post("/_api/tunnel/clients", json={"id": "laptop"})
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
            added = await client.post("/_api/tunnel/clients", json={"id": "laptop"}, headers=ADMIN)
            assert added.status_code == 201
            secret = added.json()["secret"]
            assert added.json()["id"] == "laptop" and len(secret) >= 32
            again = await client.post("/_api/tunnel/clients", json={"id": "laptop"}, headers=ADMIN)
            assert again.status_code == 409 and again.json()["error"] == "client_exists"
            for bad in ({"id": "Not.A.Label"}, {"name": "x"}):
                invalid = await client.post("/_api/tunnel/clients", json=bad, headers=ADMIN)
                assert invalid.status_code == 400, bad
            unlisted = await client.get("/_api/tunnel/clients")  # the admin's alone
            assert unlisted.status_code == 403 and unlisted.json()["error"] == "forbidden"
            listed = (await client.get("/_api/tunnel/clients", headers=ADMIN)).json()["clients"]
            assert [c["id"] for c in listed] == ["laptop"]
            assert listed[0]["connected"] is False and listed[0]["requests"] == 0
            assert listed[0]["node"] is None
            assert "secret" not in listed[0] and "secret_hash" not in listed[0]
            rotated = await client.post("/_api/tunnel/clients/laptop/rotate", headers=ADMIN)
            assert rotated.status_code == 200 and rotated.json()["secret"] != secret
            assert daemon.hub.tunnels.registry.verify("laptop", rotated.json()["secret"])
            assert not daemon.hub.tunnels.registry.verify("laptop", secret)
            removed = await client.delete("/_api/tunnel/clients/laptop", headers=ADMIN)
            assert removed.status_code == 200
            gone = await client.delete("/_api/tunnel/clients/laptop", headers=ADMIN)
            assert gone.status_code == 404 and gone.json()["error"] == "client_not_found"
            missing = await client.post("/_api/tunnel/clients/nobody/rotate", headers=ADMIN)
            assert missing.status_code == 404
            listed_again = await client.get("/_api/tunnel/clients", headers=ADMIN)
            assert listed_again.json() == {"clients": []}


async def _register_as(daemon: RunningDaemon, client_id: str, headers: dict[str, str]) -> str:
    headers = {**daemon.admin_headers, **headers}
    async with httpx.AsyncClient(base_url=daemon.url, headers=headers) as client:
        added = await client.post("/_api/tunnel/clients", json={"id": client_id})
        assert added.status_code == 201
        return str(added.json()["secret"])


def _agent_headers(client_id: str, secret: str) -> list[tuple[str, str]]:
    return [("X-Wstun-Client", client_id), ("Authorization", f"Bearer {secret}")]


async def test_agent_handshake_wrong_secret_and_duplicate(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv"})  # the agent needs no server token
    secret = await _register_as(daemon, "box", {"Authorization": "Bearer srv"})
    url = daemon.ws_url("/_tunnel/connect")
    with trio.fail_after(10):
        for bad in (_agent_headers("box", "wrong"), _agent_headers("nobody", secret), []):
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(url, extra_headers=bad):
                    pass
        async with trio_websocket.open_websocket_url(
            url, extra_headers=_agent_headers("box", secret)
        ) as agent:
            hello = frames.decode_control(str(await agent.get_message()))
            assert isinstance(hello, frames.Hello) and hello.client_id == "box"
            assert daemon.hub.tunnels.sessions["box"].client_id == "box"
            async with trio_websocket.open_websocket_url(
                daemon.ws_url("/_tunnel/connect", "client_id=box"),
                extra_headers=[("Authorization", f"Bearer {secret}")],
            ) as second:
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await second.get_message()
                assert closed.value.reason.code == 4009
            await agent.send_message(frames.encode_control(frames.Ping()))
            assert frames.decode_control(str(await agent.get_message())) == frames.Pong()
        while "box" in daemon.hub.tunnels.sessions:
            await trio.sleep(0.01)


async def _fake_agent(
    daemon: RunningDaemon, client_id: str, secret: str
) -> trio_websocket.WebSocketConnection:
    ws = await trio_websocket.connect_websocket_url(
        daemon.nursery,
        daemon.ws_url("/_tunnel/connect"),
        extra_headers=_agent_headers(client_id, secret),
    )
    assert isinstance(frames.decode_control(str(await ws.get_message())), frames.Hello)
    return ws


async def _next_frame(ws: trio_websocket.WebSocketConnection) -> frames.Frame:
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes):
            return frames.decode(message)


async def test_proxy_streams_and_fails_cleanly(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon()
    secret = await _register_as(daemon, "app", {})
    await _register_as(daemon, "off", {})
    with trio.fail_after(15):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            unknown = await client.get("/_t/nobody/x")
            assert unknown.status_code == 404 and unknown.json()["error"] == "client_not_found"
            offline = await client.get("/_t/off/x")
            assert offline.status_code == 503 and offline.json()["error"] == "client_offline"
            agent = await _fake_agent(daemon, "app", secret)

            async def answer_one() -> frames.RequestHead:
                head_frame = await _next_frame(agent)
                head = frames.decode_request_head(head_frame.payload)
                body = b""
                while (frame := await _next_frame(agent)).kind == frames.Kind.BODY:
                    body += frame.payload
                assert frame.kind == frames.Kind.END
                sid = head_frame.stream_id
                response = frames.ResponseHead(
                    status=201,
                    headers=[("set-cookie", "a=1"), ("set-cookie", "b=2"), ("connection", "close")],
                )
                await agent.send_message(frames.encode_response_head(sid, response))
                await agent.send_message(frames.encode(frames.Kind.BODY, sid, b"echo:" + body))
                await agent.send_message(frames.encode(frames.Kind.END, sid))
                return head

            async with trio.open_nursery() as nursery:
                heads: list[frames.RequestHead] = []

                async def run_agent() -> None:
                    heads.append(await answer_one())

                nursery.start_soon(run_agent)
                reply = await client.post("/_t/app/a%20b/c?x=1&x=2", content=b"\x00\x01" * 1000)
            assert reply.status_code == 201 and reply.content == b"echo:" + b"\x00\x01" * 1000
            assert reply.headers.get_list("set-cookie") == ["a=1", "b=2"]
            head = heads[0]
            assert (head.method, head.path, head.query) == ("POST", "/a%20b/c", "x=1&x=2")
            assert ("x-forwarded-prefix", "/_t/app") in head.headers
            assert any(name == "x-forwarded-for" for name, _ in head.headers)

            # The agent goes away mid-body: the caller sees a truncated stream, not a hang.
            async def drop_mid_body() -> None:
                head_frame = await _next_frame(agent)
                sid = head_frame.stream_id
                big = frames.ResponseHead(status=200, headers=[("content-length", "1000")])
                await agent.send_message(frames.encode_response_head(sid, big))
                await agent.send_message(frames.encode(frames.Kind.BODY, sid, b"x" * 10))
                await agent.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drop_mid_body)
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/_t/app/big")
    while daemon.hub.tunnels.sessions:
        await trio.sleep(0.01)
    assert daemon.hub.inflight.count == 0


async def test_no_head_in_time_is_504_and_the_agent_gets_abort(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(tunnel={"request_timeout": 0.3})
    secret = await _register_as(daemon, "slow", {})
    with trio.fail_after(10):
        agent = await _fake_agent(daemon, "slow", secret)
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            reply = await client.get("/_t/slow/")
        assert reply.status_code == 504 and reply.json()["error"] == "agent_timeout"
        head = await _next_frame(agent)
        abort = await _next_frame(agent)
        assert (abort.kind, abort.stream_id) == (frames.Kind.ABORT, head.stream_id)
        while daemon.hub.tunnels.sessions["slow"].streams:  # ABORT goes out at the timeout,
            await trio.sleep(0.01)  # a moment before the 504's request lets go of the stream


async def test_an_agent_overrunning_its_credit_loses_the_stream(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        tunnel={"window_size": 65536, "max_frame_size": 16384}, relay={"max_message_size": 70000}
    )
    secret = await _register_as(daemon, "greedy", {})
    # A caller that reads nothing, with a tiny receive buffer: the daemon cannot drain the
    # stream, so an agent ignoring the window runs past window + one message of credit.
    tiny = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    transport = httpx.AsyncHTTPTransport(socket_options=tiny)
    with trio.fail_after(20):
        agent = await _fake_agent(daemon, "greedy", secret)
        async with httpx.AsyncClient(base_url=daemon.url, transport=transport) as client:
            async with trio.open_nursery() as nursery:

                async def flood() -> frames.Frame:
                    head = await _next_frame(agent)
                    sid = head.stream_id
                    ok = frames.ResponseHead(status=200)
                    await agent.send_message(frames.encode_response_head(sid, ok))
                    for _ in range(2000):  # 2 MB, far past the 65536 + 70000 byte allowance
                        await agent.send_message(frames.encode(frames.Kind.BODY, sid, b"x" * 1000))
                    while (frame := await _next_frame(agent)).kind != frames.Kind.ABORT:
                        pass
                    return frame

                aborts: list[frames.Frame] = []

                async def run_flood() -> None:
                    aborts.append(await flood())

                nursery.start_soon(run_flood)
                async with client.stream("GET", "/_t/greedy/big") as response:
                    assert response.status_code == 200
                    while not aborts:
                        await trio.sleep(0.01)
                    with pytest.raises(httpx.HTTPError):  # truncated, never completed
                        async for _ in response.aiter_raw():
                            pass
    assert aborts[0].payload == b"credit overrun"
    session = daemon.hub.tunnels.sessions["greedy"]
    assert session.streams == {} and daemon.hub.inflight.count == 0
    assert not session.lost  # only the stream is lost, the agent stays connected


BAD_HEADS = [
    frames.ResponseHead(status=101),  # an upgrade answer to a plain request
    frames.ResponseHead(status=103),
    frames.ResponseHead(status=200, headers=[("x-(bad)", "v")]),
    frames.ResponseHead(status=200, headers=[("x-a", "line\r\nx-injected: 1")]),
    frames.ResponseHead(status=200, headers=[("x-a", "nul\x00")]),
    frames.ResponseHead(status=200, headers=[("content-length", "abc")]),
]


@pytest.mark.parametrize("buffered", [False, True])
async def test_a_head_the_caller_cannot_be_given_is_502(
    start_daemon: StartDaemon, buffered: bool
) -> None:
    daemon = await start_daemon()
    secret = await _register_as(daemon, "odd", {})
    query = "?_buffer=1" if buffered else ""
    with trio.fail_after(20):
        agent = await _fake_agent(daemon, "odd", secret)
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            # Buffered answers set their own Content-Length: the agent's is not read.
            for bad in BAD_HEADS[:-1] if buffered else BAD_HEADS:
                async with trio.open_nursery() as nursery:
                    replies: list[httpx.Response] = []

                    async def call() -> None:
                        replies.append(await client.get(f"/_t/odd/x{query}"))  # noqa: B023

                    nursery.start_soon(call)
                    sid = (await _next_frame(agent)).stream_id
                    await agent.send_message(frames.encode_response_head(sid, bad))
                    # Refused on its head: the agent is told to stop before sending a body.
                    while (frame := await _next_frame(agent)).kind != frames.Kind.ABORT:
                        pass
                    assert frame.stream_id == sid
                reply = replies[0]
                assert reply.status_code == 502, (bad, reply.text)
                assert reply.json()["error"] == "agent_error"
                assert "the local app's response" in reply.json()["message"], bad
                assert "x-injected" not in reply.headers
            # The session and the daemon carry on.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.get, "/_t/odd/fine")
                sid = (await _next_frame(agent)).stream_id
                good = frames.ResponseHead(status=200, headers=[("x-a", "caf\xe9")])
                await agent.send_message(frames.encode_response_head(sid, good))
                await agent.send_message(frames.encode(frames.Kind.END, sid))
        while daemon.hub.inflight.count:
            await trio.sleep(0.01)


async def test_a_body_past_its_content_length_is_cut_and_the_agent_stopped(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon()
    secret = await _register_as(daemon, "long", {})
    replies: list[httpx.Response] = []
    with trio.fail_after(10):
        agent = await _fake_agent(daemon, "long", secret)
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    replies.append(await client.get("/_t/long/x"))

                nursery.start_soon(call)
                sid = (await _next_frame(agent)).stream_id
                head = frames.ResponseHead(status=200, headers=[("content-length", "4")])
                await agent.send_message(frames.encode_response_head(sid, head))
                await agent.send_message(frames.encode(frames.Kind.BODY, sid, b"0123456789"))
                while (frame := await _next_frame(agent)).kind != frames.Kind.ABORT:
                    pass
                assert frame.stream_id == sid
    assert replies[0].status_code == 200 and replies[0].content == b"0123"
    while daemon.hub.inflight.count:
        await trio.sleep(0.01)


async def test_a_whole_response_in_one_frame(start_daemon: StartDaemon) -> None:
    """RESPONSE (head, body and end in one frame) is offered in hello and answers a request;
    on a stream that already has its head, or on a WebSocket, it breaks that stream only."""
    daemon = await start_daemon()
    secret = await _register_as(daemon, "app", {})
    with trio.fail_after(15):
        ws = await trio_websocket.connect_websocket_url(
            daemon.nursery,
            daemon.ws_url("/_tunnel/connect"),
            extra_headers=_agent_headers("app", secret),
        )
        hello = frames.decode_control(str(await ws.get_message()))
        assert isinstance(hello, frames.Hello) and hello.whole_responses
        head = frames.ResponseHead(status=203, headers=[("x-one", "1"), ("content-length", "11")])
        async with httpx.AsyncClient(base_url=daemon.url) as client, trio.open_nursery() as n:

            async def answer_whole() -> None:
                sid = (await _next_frame(ws)).stream_id
                await ws.send_message(frames.encode_response(sid, head, b"all at once"))

            n.start_soon(answer_whole)
            reply = await client.get("/_t/app/whole")
            assert (reply.status_code, reply.content) == (203, b"all at once")
            assert reply.headers["x-one"] == "1"

            # The head of a response whose body is all here goes out with it, in one segment.
            n.start_soon(answer_whole)
            raw = await trio.open_tcp_stream("127.0.0.1", daemon.port)
            async with raw:
                await raw.send_all(b"GET /_t/app/whole HTTP/1.1\r\nHost: x\r\n\r\n")
                first = await raw.receive_some(65536)
                assert first.startswith(b"HTTP/1.1 203 ") and first.endswith(b"all at once")

            async def head_then_whole() -> None:
                sid = (await _next_frame(ws)).stream_id
                await ws.send_message(
                    frames.encode_response_head(sid, frames.ResponseHead(status=200))
                )
                await ws.send_message(frames.encode_response(sid, head, b"all at once"))
                abort = await _next_frame(ws)
                assert (abort.kind, abort.stream_id) == (frames.Kind.ABORT, sid)

            n.start_soon(head_then_whole)
            with pytest.raises(httpx.RemoteProtocolError):  # the answer is cut, never doubled
                await client.get("/_t/app/twice")

            async def whole_on_a_websocket() -> None:
                request = await _next_frame(ws)
                assert frames.decode_request_head(request.payload).websocket
                sid = request.stream_id
                await ws.send_message(frames.encode_response(sid, frames.ResponseHead(status=101)))
                abort = await _next_frame(ws)
                assert (abort.kind, abort.stream_id, abort.payload) == (
                    frames.Kind.ABORT,
                    sid,
                    b"protocol error",
                )

            n.start_soon(whole_on_a_websocket)
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(daemon.ws_url("/_t/app/ws")):
                    pass
        await ws.aclose()


async def test_a_caller_hanging_up_before_the_head_aborts_the_stream(
    start_daemon: StartDaemon,
) -> None:
    """A body-less request learns of its caller hanging up from the connection itself (no task
    waits in receive() for it): the agent gets ABORT at once, long before request_timeout."""
    daemon = await start_daemon(tunnel={"request_timeout": 60})
    secret = await _register_as(daemon, "app", {})
    with trio.fail_after(10):
        agent = await _fake_agent(daemon, "app", secret)
        caller = await trio.open_tcp_stream("127.0.0.1", daemon.port)
        await caller.send_all(b"GET /_t/app/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        request = await _next_frame(agent)
        assert request.kind == frames.Kind.HEAD  # the agent holds it, never answering
        await caller.aclose()
        abort = await _next_frame(agent)
        assert (abort.kind, abort.stream_id) == (frames.Kind.ABORT, request.stream_id)
        while daemon.hub.tunnels.sessions["app"].streams:
            await trio.sleep(0.01)
        await agent.aclose()
