"""The accept loop (wstund/transport): every socket counts against the caps, refusals are cheap
and quiet, the admin socket keeps answering; the lean relay lane encodes a frame once."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import socket
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import wrap_app
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, TextMessage

from wstund import closecodes
from wstund.relay.endpoint import refuse_lane
from wstund.transport.admission import (
    REFUSAL_SLOTS,
    REFUSAL_SLOTS_PER_ADDRESS,
    Admission,
    RateLimitedLine,
    Verdict,
)
from wstund.transport.frames import FrameCache, encode_frame, encode_message
from wstund.transport.head import parse_head
from wstund.transport.replay import (
    HOLD_NEXT_WRITE,
    ON_HANGUP,
    ReplayStream,
    hangup_watch,
    write_hold,
)
from wstund.transport.server import Lanes, LaneSettings, Transport
from wstund.tunnel.asgi import hangup_scope

from .conftest import (
    RunningDaemon,
    StartDaemon,
    connect,
    connect_stalled,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)

# -- sans-I/O parts --------------------------------------------------------------------------


def test_admission_counts_total_and_per_address_then_refuses_then_drops() -> None:
    admission = Admission()
    assert admission.admit("a", 3, 2) == (Verdict.SERVE, "")
    assert admission.admit("a", 3, 2) == (Verdict.SERVE, "")
    verdict, reason = admission.admit("a", 3, 2)
    assert verdict is Verdict.REFUSE and "too many connections from a (2)" in reason
    assert admission.admit("b", 3, 2)[0] is Verdict.SERVE
    verdict, reason = admission.admit("c", 3, 2)
    assert verdict is Verdict.REFUSE and "connection limit (3)" in reason
    # Refusals under way are bounded per address, then in all: past them, drop at once.
    for _ in range(REFUSAL_SLOTS_PER_ADDRESS - 1):
        assert admission.admit("a", 3, 2)[0] is Verdict.REFUSE
    assert admission.admit("a", 3, 2)[0] is Verdict.DROP
    admission.release("a", Verdict.SERVE)
    assert admission.admit("a", 3, 2)[0] is Verdict.SERVE
    assert admission.total == 3 and admission.by_address == {"a": 2, "b": 1}


def test_refusal_slots_are_bounded_in_all() -> None:
    admission = Admission()
    verdicts = [admission.admit(f"10.0.0.{n}", 0, None)[0] for n in range(REFUSAL_SLOTS + 5)]
    assert verdicts == [Verdict.REFUSE] * REFUSAL_SLOTS + [Verdict.DROP] * 5
    admission.release("10.0.0.0", Verdict.REFUSE)
    assert admission.admit("10.0.0.99", 0, None)[0] is Verdict.REFUSE
    assert admission.total == 0


def test_rate_limited_line_counts_what_it_held_back() -> None:
    line = RateLimitedLine(10.0)
    assert line.due(0.0) == 0
    assert [line.due(t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert line.due(10.0) == 3


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70_000])
def test_frames_match_what_wsproto_decodes(size: int) -> None:
    """Our encoding of every length class is read back by wsproto as the same message."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    from wsproto.events import AcceptConnection, Request

    server.receive_data(client.send(Request(host="x", target="/ws")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    next(client.events())
    text, data = "é" * (size // 2), bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    client.receive_data(encode_message(text) + encode_message(data))
    events = list(client.events())
    assert isinstance(events[0], TextMessage) and events[0].data == text
    assert isinstance(events[1], BytesMessage) and events[1].data == data
    assert encode_frame(0x9, b"")[:2] == b"\x89\x00"


def test_frame_cache_encodes_the_same_object_once() -> None:
    cache = FrameCache()
    frame = json.dumps({"type": "note"})
    first = cache.encode(frame)
    assert cache.encode(frame) is first
    assert cache.encode(json.dumps({"type": "note"})) == first
    assert cache.encoded == 2


async def test_a_held_write_goes_out_with_the_next_one() -> None:
    """``hold_next_write`` keeps a response head for its body (one send); an empty write (the
    end of a body-less answer) or EOF lets it out too."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    stream = ReplayStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b"", ours)
    assert write_hold({"state": {HOLD_NEXT_WRITE: stream.hold_next_write}}) is not None
    write_hold({})()  # no state: a no-op

    def readable() -> bytes:
        try:
            return theirs.recv(65536)
        except BlockingIOError:
            return b""

    stream.hold_next_write()
    await stream.send_all(b"head;")
    assert readable() == b""
    await stream.send_all(b"body")
    assert readable() == b"head;body"
    for end in (b"", None):
        stream.hold_next_write()
        await stream.send_all(b"head;")
        assert readable() == b""
        if end is None:
            await stream.send_eof()
        else:
            await stream.send_all(end)
        assert readable() == b"head;"
    await stream.aclose()
    theirs.close()


async def test_the_read_that_finds_the_caller_gone_calls_the_watcher() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    stream = ReplayStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b"", ours)
    assert hangup_watch({"state": {ON_HANGUP: stream.on_hangup}}) is not None
    assert hangup_watch({}) is None  # no such connection: read receive() instead
    calls: list[str] = []
    stop = stream.on_hangup(lambda: calls.append("first"))
    stop()  # the request ended: it no longer watches
    stream.on_hangup(lambda: calls.append("second"))
    theirs.sendall(b"more")
    assert await stream.receive_some(100) == b"more" and calls == []
    theirs.close()
    assert await stream.receive_some(100) == b""
    assert calls == ["second"]
    stream.on_hangup(lambda: calls.append("late"))  # gone already: called at once
    assert calls == ["second", "late"]
    await stream.aclose()


async def test_hangup_scope_falls_back_to_http_disconnect() -> None:
    """Outside our accept loop (no on_hangup in the scope) a task reads receive() for it."""
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    gone = trio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    with trio.fail_after(5):
        async with hangup_scope({"type": "http"}, receive) as caller_gone:
            gone.set()
            await trio.sleep_forever()
    assert caller_gone.cancelled_caught


def test_head_parsing() -> None:
    head = parse_head(
        b"GET /ws?token=a&token=b HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert head is not None and head.is_websocket_upgrade
    assert head.path == "/ws" and head.args() == {"token": "a"} and head.header(b"host") == b"x"
    assert head.rest == b""
    early = parse_head(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n\x81\x80")
    assert early is not None and early.rest == b"\x81\x80"
    plain = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert plain is not None and not plain.is_websocket_upgrade
    h2 = parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # Hypercorn's to answer
    assert h2 is None or not h2.is_websocket_upgrade
    assert parse_head(b"\x16\x03\x01\x02\x00\r\n\r\n") is None  # a TLS hello


# -- over sockets ----------------------------------------------------------------------------


async def idle_sockets(
    daemon: RunningDaemon, count: int, source: str = "127.0.0.1"
) -> list[trio.socket.SocketType]:
    """``count`` TCP connections that never send a byte, each accepted by the daemon."""
    opened = []
    for _ in range(count):
        sock = trio.socket.socket()
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", daemon.port))
        opened.append(sock)
    return opened


async def wait_counted(daemon: RunningDaemon, total: int) -> None:
    assert daemon.daemon.transport is not None
    admission = daemon.daemon.transport.admission
    with trio.fail_after(10):
        while admission.total != total:
            await trio.sleep(0.01)


async def refused_message(daemon: RunningDaemon) -> str:
    """The message of the 503 a plain HTTP request gets at the caps."""
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        refused = await client.get("/_api/status")
    assert refused.status_code == 503, refused
    assert refused.json()["error"] == "too_many_connections"
    return str(refused.json()["message"])


async def test_idle_and_http_sockets_count_and_refusals_say_why(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Sockets that never send a byte fill the total cap: an HTTP request then gets a 503 with
    a JSON body, a relay socket the relay's too_many_connections and 4029; nothing logs a
    traceback; closing the idle sockets lets everyone in again."""
    daemon = await start_daemon(server={"max_connections": 3})
    idle = await idle_sockets(daemon, 3)
    await wait_counted(daemon, 3)
    with trio.fail_after(10):
        assert "connection limit (3)" in await refused_message(daemon)
        relay = await connect(daemon)
        error = await recv(relay)
        assert error["type"] == "error" and error["payload"]["code"] == "too_many_connections"
        assert await expect_closed(relay) == closecodes.RATE_LIMITED
    for sock in idle:
        sock.close()
    await wait_counted(daemon, 0)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            assert (await client.get("/_api/status")).status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "a refusal logged a traceback"
    assert daemon.hub.metrics.connections_refused._value.get() == 2


async def test_per_address_cap_counts_every_socket(start_daemon: StartDaemon) -> None:
    """Two idle sockets from 127.0.0.1 fill its cap of 2; 127.0.0.2 is still served."""
    daemon = await start_daemon(server={"max_connections_per_ip": 2})
    idle = await idle_sockets(daemon, 2)
    await wait_counted(daemon, 2)
    with trio.fail_after(10):
        assert "too many connections from 127.0.0.1 (2)" in await refused_message(daemon)
        elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=elsewhere, base_url=daemon.url) as client:
            assert (await client.get("/_api/status")).status_code == 200
    assert len(idle) == 2


async def test_past_the_refusal_slots_sockets_close_at_once_and_admin_answers(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """At the limit with every refusal slot taken by silent sockets, a new socket is closed
    at once without a byte read; the log has one refusal line, no traceback; the admin socket
    still answers."""
    caplog.set_level(logging.WARNING, "wstund.transport")
    daemon = await start_daemon(server={"max_connections": 2, "head_timeout": 30.0})
    idle = await idle_sockets(daemon, 2)
    await wait_counted(daemon, 2)
    # Silent sockets from many addresses take the refusal slots (30 s head timeout).
    for n in range(REFUSAL_SLOTS):
        idle += await idle_sockets(daemon, 1, source=f"127.0.1.{n + 1}")
    assert daemon.daemon.transport is not None
    with trio.fail_after(10):
        while daemon.daemon.transport.admission.refusing < REFUSAL_SLOTS:
            await trio.sleep(0.01)
        dropped = (await idle_sockets(daemon, 1, source="127.0.2.1"))[0]
        assert await dropped.recv(10) == b""  # closed without waiting for anything
        transport = httpx.AsyncHTTPTransport(uds=str(daemon.daemon.admin_socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://wstund") as admin:
            assert (await admin.get("/_api/status")).status_code == 200
    refusals = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_broadcast_is_encoded_once_for_fifty_members_in_order(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon()
    assert daemon.daemon.transport is not None
    cache = daemon.daemon.transport.cache
    host, uuid = await create_room(daemon)
    members = [await join_room(daemon, uuid, f"m{i}", host=host) for i in range(50)]
    before = cache.encoded
    messages = 40
    for n in range(messages):
        await send(host, "tick", {"n": n})

    async def read(ws: trio_websocket.WebSocketConnection, got: list[int]) -> None:
        for _ in range(messages):
            got.append((await recv(ws, timeout=20))["payload"]["n"])

    received: list[list[int]] = [[] for _ in members]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for ws, got in zip(members, received, strict=True):
                nursery.start_soon(read, ws, got)
    assert received == [list(range(messages))] * 50
    # One encoding per broadcast, not one per member (50 × 40 = 2,000).
    assert cache.encoded - before <= messages + 5, cache.encoded - before


async def test_a_member_past_max_queued_bytes_gets_4008_while_others_receive(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(relay={"max_queued_bytes": 400 * 1024, "slow_consumer_timeout": 60})
    host, uuid = await create_room(daemon)
    readers = [await join_room(daemon, uuid, f"m{i}", host=host) for i in range(5)]
    stalled = await connect_stalled(daemon)
    await send(stalled, "join_instance", {"uuid": uuid, "userId": "stalled"})
    assert (await recv(stalled))["payload"]["success"] is True
    assert (await recv(host))["type"] == "client_connected"
    messages, padding = 100, "x" * 8192

    async def read(ws: trio_websocket.WebSocketConnection) -> None:
        for n in range(messages):
            assert (await recv(ws, timeout=20))["payload"]["n"] == n

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for ws in readers:
                nursery.start_soon(read, ws)
            for n in range(messages):
                await send(host, "tick", {"n": n, "pad": padding})
        note = await recv(host)
        assert note["type"] == "client_disconnected" and note["payload"]["userId"] == "stalled"
        try:
            while True:
                await stalled.get_message()
        except trio_websocket.ConnectionClosed as closed:
            assert closed.reason.code == closecodes.SLOW_CONSUMER


async def _upgrade(daemon: RunningDaemon, offer: bool) -> tuple[WSConnection, trio.SocketStream]:
    """A wsproto client on /ws, offering permessage-deflate or not, after the 101."""
    from wsproto.events import AcceptConnection, Request
    from wsproto.extensions import PerMessageDeflate

    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    client = WSConnection(ConnectionType.CLIENT)
    extensions = [PerMessageDeflate()] if offer else []
    await stream.send_all(client.send(Request(host="x", target="/ws", extensions=extensions)))
    while True:
        client.receive_data(await stream.receive_some())
        events = list(client.events())
        if events:
            assert isinstance(events[0], AcceptConnection), events
            return client, stream


async def test_a_frame_sent_right_behind_the_upgrade_is_read(start_daemon: StartDaemon) -> None:
    """A client that sends its first frame without waiting for the 101 is still heard."""
    from wsproto.events import AcceptConnection, Request

    daemon = await start_daemon()
    client = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    upgrade = client.send(Request(host="x", target="/ws"))
    # wsproto sends frames only once open: encode the ping as a client would, masked.
    from wsproto.frame_protocol import FrameProtocol

    ping = FrameProtocol(client=True, extensions=[]).send_data(json.dumps({"type": "ping"}))
    await stream.send_all(upgrade + ping)
    got: list[object] = []
    with trio.fail_after(10):
        while not any(isinstance(e, TextMessage) for e in got):
            client.receive_data(await stream.receive_some())
            got.extend(client.events())
    assert isinstance(got[0], AcceptConnection)
    assert json.loads(next(e.data for e in got if isinstance(e, TextMessage)))["type"] == "pong"
    await stream.aclose()


async def _roundtrip(client: WSConnection, stream: trio.SocketStream) -> tuple[str, bytes]:
    """Send the relay's ping; return the pong's text and the raw bytes it came in."""
    await stream.send_all(client.send(TextMessage(json.dumps({"type": "ping"}))))
    raw = b""
    while True:
        data = await stream.receive_some()
        raw += data
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, TextMessage):
                return event.data, raw


@pytest.mark.parametrize("enabled", [False, True])
async def test_permessage_deflate_only_when_configured(
    start_daemon: StartDaemon, enabled: bool
) -> None:
    """Offered by the client, permessage-deflate is accepted only with relay.permessage_deflate;
    either way the relay answers."""
    daemon = await start_daemon(relay={"permessage_deflate": enabled})
    with trio.fail_after(10):
        client, stream = await _upgrade(daemon, offer=True)
        text, raw = await _roundtrip(client, stream)
    assert json.loads(text)["type"] == "pong"
    compressed = bool(raw[0] & 0x40)  # RSV1 marks a compressed message
    assert compressed is enabled
    await stream.aclose()


async def upgrade_without_request(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering /bad with status 101 to a plain request (h11 refuses it, and
    Hypercorn's fallback 500 then raises outside any handler); everything else is 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    status = 101 if scope["path"] == "/bad" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_an_error_escaping_hypercorn_closes_only_its_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    settings = LaneSettings(
        max_connections=10,
        max_connections_per_ip=10,
        head_timeout=5.0,
        max_message_size=1024,
        ping_interval=0,
        idle_timeout=0,
        send_buffer=0,
    )
    transport = Transport(
        wrap_app(upgrade_without_request, None, "asgi"),
        config,
        Lanes(lambda head: None, refuse_lane, lambda: settings),
    )
    stop = trio.Event()
    binds = await nursery.start(transport.serve, sockets, stop)
    async with httpx.AsyncClient(base_url=binds[0]) as client:
        with trio.fail_after(10):
            for _ in range(3):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/bad")
                assert (await client.get("/ok")).text == "ok"
    assert any("dropped after an error" in r.getMessage() for r in caplog.records)
    stop.set()


async def test_out_of_descriptors_accept_pauses_with_one_line_and_recovers(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """With the process out of descriptors, accept() fails with EMFILE: the daemon logs one
    line (no traceback), pauses, and serves again once descriptors are free."""
    caplog.set_level(logging.WARNING, "wstund.transport")
    daemon = await start_daemon()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients: list[trio.socket.SocketType] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with trio.fail_after(10):
            while not any("accept failed" in r.getMessage() for r in caplog.records):
                try:
                    sock = trio.socket.socket()
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                    await trio.sleep(0.05)
                    continue
                clients.append(sock)
                await sock.connect(("127.0.0.1", daemon.port))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sock in clients:
            sock.close()
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            assert (await client.get("/_api/status")).status_code == 200
    failures = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(failures) == 1 and "Too many open files" in failures[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_silent_member_dropped_while_its_writer_waits_logs_no_error(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """The idle timeout closes the socket of a member that neither reads nor answers pings
    while frames wait for it: it is dropped quietly, the others go on."""
    daemon = await start_daemon(
        relay={"heartbeat_interval": 0.1, "idle_timeout": 0.5, "slow_consumer_timeout": 60}
    )
    host, uuid = await create_room(daemon)
    reader = await join_room(daemon, uuid, "reader", host=host)
    stalled = await connect_stalled(daemon)
    await send(stalled, "join_instance", {"uuid": uuid, "userId": "stalled"})
    assert (await recv(stalled))["payload"]["success"] is True
    assert (await recv(host))["type"] == "client_connected"
    with trio.fail_after(20):
        for n in range(40):
            await send(host, "tick", {"n": n, "pad": "x" * 16384})
            assert (await recv(reader))["payload"]["n"] == n
        note = await recv(host)
        assert note["type"] == "client_disconnected" and note["payload"]["userId"] == "stalled"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_relay_upgrade_on_a_kept_alive_connection_is_served_by_quart(
    start_daemon: StartDaemon,
) -> None:
    """An upgrade after a plain request on the same connection reaches Hypercorn and the
    Quart route, which serves the same relay (the lane takes only a connection's first head)."""
    from wsproto.events import AcceptConnection, CloseConnection, Request

    daemon = await start_daemon()
    host, uuid = await create_room(daemon)
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    with trio.fail_after(10):
        await stream.send_all(b"GET /_api/status HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += await stream.receive_some()
        head, _, body = reply.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        while len(body) < length:
            body += await stream.receive_some()
        assert head.startswith(b"HTTP/1.1 200")
        client = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(client.send(Request(host="x", target="/ws")))
        join = {"type": "join_instance", "payload": {"uuid": uuid, "userId": "late"}}
        events: list[object] = []
        while not any(isinstance(e, TextMessage) for e in events):
            client.receive_data(await stream.receive_some())
            for event in client.events():
                events.append(event)
                if isinstance(event, AcceptConnection):
                    await stream.send_all(client.send(TextMessage(json.dumps(join))))
        ack = json.loads(next(e.data for e in events if isinstance(e, TextMessage)))
        assert ack["type"] == "ack" and ack["payload"]["success"] is True
        assert (await recv(host))["type"] == "client_connected"
        await send(host, "kick_client", {"userId": "late", "instanceUuid": uuid})
        closed = None
        while closed is None:
            client.receive_data(await stream.receive_some())
            closed = next((e for e in client.events() if isinstance(e, CloseConnection)), None)
        assert closed.code == closecodes.KICKED
    await stream.aclose()


async def test_agent_sockets_ride_the_lane(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """/_tunnel/connect is served on the lean lane: refused with 401 on a wrong secret, its
    hello and pongs arrive, its close code is logged."""
    from wstund.tunnel import frames

    caplog.set_level(logging.INFO, "wstund.access")
    daemon = await start_daemon()
    assert daemon.daemon.transport is not None
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as client:
        secret = (await client.post("/_api/tunnel/clients", json={"id": "box"})).json()["secret"]
    url = daemon.ws_url("/_tunnel/connect")
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.HandshakeError) as refused:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[("X-Wstun-Client", "box"), ("Authorization", "Bearer no")]
            ):
                pass
        assert refused.value.status_code == 401  # type: ignore[attr-defined]
        headers = [("X-Wstun-Client", "box"), ("Authorization", f"Bearer {secret}")]
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as agent:
            hello = frames.decode_control(str(await agent.get_message()))
            assert isinstance(hello, frames.Hello) and hello.client_id == "box"
            assert len(daemon.daemon.transport.lane_sockets) == 1
            await agent.send_message(frames.encode_control(frames.Ping()))
            assert frames.decode_control(str(await agent.get_message())) == frames.Pong()
            await agent.aclose(code=4321)
        while "box" in daemon.hub.tunnels.sessions:
            await trio.sleep(0.01)
        while not any(getattr(r, "close_code", None) == 4321 for r in caplog.records):
            await trio.sleep(0.01)
    line = next(r for r in caplog.records if getattr(r, "close_code", None) == 4321)
    assert line.path == "/_tunnel/connect" and line.accepted  # type: ignore[attr-defined]
