"""The agent against the tunnel wire format (frames.py), with a real local app behind it.

The wstund side here is a small protocol peer built on the same codec (frames.py, flow.py) so the
agent's behaviour on the wire (credit, abort, ping, reconnect, auth refusal) is checked exactly;
tests/test_tunnel_e2e.py runs the same agent against the real daemon.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trio
import trio_websocket

from wstund.agent import Agent, AgentConfig, AuthenticationFailed
from wstund.tunnel.flow import ReceiveWindow, frame_cost
from wstund.tunnel.frames import (
    Frame,
    Hello,
    Kind,
    Ping,
    Pong,
    RequestHead,
    ResponseHead,
    decode,
    decode_close,
    decode_control,
    decode_response,
    decode_response_head,
    encode,
    encode_close,
    encode_control,
    encode_request_head,
    encode_text,
    encode_window,
)

from .localapp import LocalApp, pattern_sha256, start_local_app

WINDOW = 32 * 1024
MAX_FRAME = 8 * 1024
SECRET = "s3cret"


@dataclass
class Peer:
    """The server end of one agent socket: frames per stream, credit checked on every BODY."""

    ws: trio_websocket.WebSocketConnection
    inboxes: dict[int, trio.MemorySendChannel[Frame]] = field(default_factory=dict)
    pongs: int = 0

    def open(self, stream_id: int) -> trio.MemoryReceiveChannel[Frame]:
        send, receive = trio.open_memory_channel[Frame](1000)
        self.inboxes[stream_id] = send
        return receive

    async def read(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if isinstance(message, str):
                if isinstance(decode_control(message), Pong):
                    self.pongs += 1
                continue
            frame = decode(message)
            inbox = self.inboxes.get(frame.stream_id)
            if inbox is not None:
                inbox.send_nowait(frame)


@dataclass
class Harness:
    port: int = 0
    peers: list[Peer] = field(default_factory=list)
    auth_headers: list[tuple[str, str]] = field(default_factory=list)
    new_peer: trio.Event = field(default_factory=trio.Event)
    whole_responses: bool = False  # what hello offers (False: a server that predates RESPONSE)

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.auth_headers.append((headers.get("authorization", ""), request.path))
        if headers.get("authorization") != f"Bearer {SECRET}":
            await request.reject(401, body=b'{"error":"bad secret"}')
            return
        ws = await request.accept()
        hello = Hello(
            client_id="home",
            window=WINDOW,
            max_frame=MAX_FRAME,
            max_message=MAX_FRAME,
            ping_interval=0.2,
            idle_timeout=10,
            whole_responses=self.whole_responses,
        )
        await ws.send_message(encode_control(hello))
        peer = Peer(ws)
        self.peers.append(peer)
        self.new_peer.set()
        self.new_peer = trio.Event()
        await peer.read()


@pytest.fixture
async def harness(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    h = Harness()
    listeners = await nursery.start(trio_websocket.serve_websocket, h.handler, "127.0.0.1", 0, None)
    h.port = listeners.port
    yield h


@pytest.fixture
async def local(nursery: trio.Nursery) -> LocalApp:
    return await start_local_app(nursery)


async def start_agent(
    nursery: trio.Nursery, harness: Harness, local: LocalApp, target: str = ""
) -> Agent:
    config = AgentConfig(
        server=f"http://127.0.0.1:{harness.port}",
        client_id="home",
        secret=SECRET,
        target=target or local.url,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    agent = Agent(config)
    nursery.start_soon(agent.run)
    with trio.fail_after(5):
        await agent.wait_sessions(1)
    return agent


async def collect(
    peer: Peer, stream_id: int, inbox: trio.MemoryReceiveChannel[Frame]
) -> tuple[ResponseHead, bytes]:
    """Read a response, granting credit like wstund does; the agent must never overrun it."""
    window = ReceiveWindow(WINDOW, MAX_FRAME)
    head = decode_response_head((await inbox.receive()).payload)
    digest = bytearray()
    async for frame in inbox:
        if frame.kind == Kind.END:
            break
        assert frame.kind == Kind.BODY
        assert len(frame.payload) <= MAX_FRAME
        window.received(frame_cost(frame.payload))  # raises on an overrun
        digest += frame.payload
        grant = window.consumed(frame_cost(frame.payload))
        if grant:
            await peer.ws.send_message(encode_window(stream_id, grant))
    return head, bytes(digest)


async def test_post_binary_body_round_trip(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    body = bytes(range(256)) * 1000  # 256 kB: needs WINDOW grants from the agent
    inbox = peer.open(1)
    head = RequestHead(
        method="POST",
        path="/echo",
        query="a=1&a=2",
        headers=[("content-type", "application/octet-stream"), ("x-test", "yes"), ("host", "pub")],
        body=True,
    )
    with trio.fail_after(10):
        await peer.ws.send_message(encode_request_head(1, head))
        credit = WINDOW
        sent = 0
        response: list[tuple[ResponseHead, bytes]] = []

        async def read_response() -> None:
            response.append(await collect(peer, 1, inbox))

        async with trio.open_nursery() as n:
            windows_in, windows = trio.open_memory_channel[Frame](100)
            # Route the agent's WINDOW frames on stream 1 to the uploader.
            real_inbox = peer.inboxes[1]

            class Split:
                def send_nowait(self, frame: Frame) -> None:
                    (windows_in if frame.kind == Kind.WINDOW else real_inbox).send_nowait(frame)

            peer.inboxes[1] = Split()  # type: ignore[assignment]
            n.start_soon(read_response)
            while sent < len(body):
                while credit <= 0:
                    credit += int.from_bytes((await windows.receive()).payload, "big")
                piece = body[sent : sent + MAX_FRAME]
                await peer.ws.send_message(encode(Kind.BODY, 1, piece))
                credit -= len(piece)
                sent += len(piece)
            await peer.ws.send_message(encode(Kind.END, 1))
    rhead, data = response[0]
    assert rhead.status == 201
    headers = dict(rhead.headers)
    assert headers["x-method"] == "POST"
    assert headers["x-query"] == "a=1&a=2"
    assert headers["x-saw-x-test"] == "yes"
    assert data == body


async def test_download_respects_credit(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    n = 3 * 1024 * 1024 + 17
    inbox = peer.open(5)
    with trio.fail_after(20):
        await peer.ws.send_message(
            encode_request_head(5, RequestHead(method="GET", path="/bytes", query=f"n={n}"))
        )
        head, data = await collect(peer, 5, inbox)
    assert head.status == 200
    assert hashlib.sha256(data).hexdigest() == pattern_sha256(n)


async def test_stalled_stream_holds_its_window_only(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    """Without grants the agent stops after one window (+ one frame); other streams go on."""
    await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    stalled = peer.open(7)
    with trio.fail_after(10):
        await peer.ws.send_message(
            encode_request_head(7, RequestHead(method="GET", path="/bytes", query="n=10000000"))
        )
        other = peer.open(8)
        await peer.ws.send_message(
            encode_request_head(8, RequestHead(method="GET", path="/bytes", query="n=500000"))
        )
        head, data = await collect(peer, 8, other)
        assert len(data) == 500000
    await trio.sleep(0.2)  # the stalled stream has had time to overrun, were it to
    queued = 0
    while True:
        try:
            frame = stalled.receive_nowait()
        except trio.WouldBlock:
            break
        if frame.kind == Kind.BODY:
            queued += len(frame.payload)
    assert 0 < queued <= WINDOW + MAX_FRAME


async def test_abort_reaches_local_app_and_ping_answered(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    agent = await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    inbox = peer.open(9)
    with trio.fail_after(10):
        await peer.ws.send_message(encode_request_head(9, RequestHead(method="GET", path="/hold")))
        await local.holding.wait()
        assert (await inbox.receive()).kind == Kind.HEAD
        await peer.ws.send_message(encode_text(9, Kind.ABORT, "caller left"))
        await local.abort_event.wait()
        assert 9 not in agent.streams
        await peer.ws.send_message(encode_control(Ping()))
        while peer.pongs == 0:
            await trio.sleep(0.01)


async def test_websocket_echo_and_close_code(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    inbox = peer.open(11)
    with trio.fail_after(10):
        await peer.ws.send_message(
            encode_request_head(11, RequestHead(method="GET", path="/ws", websocket=True))
        )
        head = decode_response_head((await inbox.receive()).payload)
        assert head.status == 101
        await peer.ws.send_message(encode_text(11, Kind.TEXT, "hi"))
        frame = await inbox.receive()
        assert (frame.kind, frame.payload) == (Kind.TEXT, b"echo:hi")
        await peer.ws.send_message(encode(Kind.BODY, 11, b"abc"))
        frame = await inbox.receive()
        assert (frame.kind, frame.payload) == (Kind.BODY, b"cba")
        await peer.ws.send_message(encode_text(11, Kind.TEXT, "close"))
        frame = await inbox.receive()
        assert frame.kind == Kind.END
        assert decode_close(frame.payload) == (4321, "asked")


async def test_reconnects_after_socket_loss(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    agent = await start_agent(nursery, harness, local)
    with trio.fail_after(10):
        await harness.peers[0].ws.aclose(1001, "going away")
        await agent.wait_sessions(2)
    assert len(harness.auth_headers) >= 2
    assert all(auth == f"Bearer {SECRET}" for auth, _ in harness.auth_headers)
    assert harness.auth_headers[0][1] == "/_tunnel/connect?client_id=home"


async def test_wrong_secret_stops_the_agent(harness: Harness, local: LocalApp) -> None:
    config = AgentConfig(
        server=f"http://127.0.0.1:{harness.port}", client_id="home", secret="nope", target=local.url
    )
    with trio.fail_after(5), pytest.raises(AuthenticationFailed, match="401"):
        await Agent(config).run()


async def test_unreachable_local_app_gives_an_error_frame(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens there once closed
    agent = await start_agent(nursery, harness, local, target=f"http://127.0.0.1:{closed_port}")
    peer = harness.peers[0]
    inbox = peer.open(3)
    with trio.fail_after(10):
        await peer.ws.send_message(encode_request_head(3, RequestHead(method="GET", path="/")))
        frame = await inbox.receive()
    assert frame.kind == Kind.ERROR and b"local app" in frame.payload
    assert agent.online


async def test_websocket_closed_by_the_caller_closes_the_local_socket(
    nursery: trio.Nursery, harness: Harness, local: LocalApp
) -> None:
    agent = await start_agent(nursery, harness, local)
    peer = harness.peers[0]
    inbox = peer.open(13)
    with trio.fail_after(10):
        head = RequestHead(method="GET", path="/ws", websocket=True, subprotocols=[])
        await peer.ws.send_message(encode_request_head(13, head))
        assert decode_response_head((await inbox.receive()).payload).status == 101
        await peer.ws.send_message(encode_close(13, 4000, "bye"))
        frame = await inbox.receive()  # the local socket's close is reported back
        assert frame.kind == Kind.END
        while agent.streams:
            await trio.sleep(0.01)


async def _one_write_app(stream: trio.SocketStream) -> None:
    """A local app whose small answer (head and body) leaves in one write, as nginx's does."""
    async with stream:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-app: one\r\n\r\nhello")


@pytest.mark.parametrize("whole", [True, False])
async def test_a_small_response_is_one_frame_where_the_server_takes_it(
    nursery: trio.Nursery, harness: Harness, whole: bool
) -> None:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, _one_write_app, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    harness.whole_responses = whole
    config = AgentConfig(
        server=f"http://127.0.0.1:{harness.port}",
        client_id="home",
        secret=SECRET,
        target=f"http://127.0.0.1:{port}",
    )
    agent = Agent(config)
    nursery.start_soon(agent.run)
    with trio.fail_after(10):
        await agent.wait_sessions(1)
        peer = harness.peers[0]
        inbox = peer.open(3)
        await peer.ws.send_message(encode_request_head(3, RequestHead(method="GET", path="/")))
        first = await inbox.receive()
        if whole:
            assert first.kind == Kind.RESPONSE
            head, body = decode_response(first.payload)
        else:  # an older server: HEAD, BODY and END, as before
            assert first.kind == Kind.HEAD
            head = decode_response_head(first.payload)
            body_frame, end = await inbox.receive(), await inbox.receive()
            assert (body_frame.kind, end.kind) == (Kind.BODY, Kind.END)
            body = body_frame.payload
    assert (head.status, body) == (200, b"hello")
    assert ("x-app", "one") in head.headers
