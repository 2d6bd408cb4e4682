"""Every WebSocket upgrade on a fresh connection runs on the lean lane, the ASGI ones (tunnelled
WebSockets, MoosicBox sockets, Quart's) through wstund/transport/asgiws: close codes both ways,
keepalive with a socket's own override, denial responses, one access line each."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events as wsevents

from wstund.agent import Agent, AgentConfig
from wstund.transport import asgiws
from wstund.transport.frames import FrameCache
from wstund.transport.head import parse_head
from wstund.transport.websocket import LaneSocket

from .conftest import RunningDaemon, StartDaemon, open_raw_websocket
from .moosicbox_sender import ADMIN, register
from .test_tunnel_e2e import CLIENT, Tunnel, open_tunnel, run_agent
from .test_tunnel_e2e import register as register_client

MOOSICBOX_CLIENT = "5d0f3c2a-8b1e-4f7a-9c6d-2e4b8a1f0c93"


def lane_count(daemon: RunningDaemon) -> int:
    """WebSockets the lean lane serves right now."""
    assert daemon.daemon.transport is not None
    return len(daemon.daemon.transport.lane_sockets)


def access_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[Any]:
    return [
        r
        for r in caplog.records
        if r.name == "wstund.access" and getattr(r, "kind", "") == "websocket" and r.path == path
    ]


async def pings_until_dropped(stream: trio.SocketStream, connection: Any) -> int:
    """Read without answering until the daemon drops the connection; the pings seen."""
    pings = 0
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return pings
            connection.receive_data(data)
            pings += sum(isinstance(e, wsevents.Ping) for e in connection.events())


@pytest.fixture
async def tunnel(nursery: trio.Nursery, start_daemon: StartDaemon) -> Tunnel:
    return await open_tunnel(nursery, start_daemon)


async def test_tunnelled_websocket_on_the_lane_carries_close_codes_with_one_access_line(
    tunnel: Tunnel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wstund.access")
    daemon = tunnel.daemon
    agents_only = lane_count(daemon)
    url = daemon.ws_url(f"/_t/{CLIENT}/ws")
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url, subprotocols=["v2"]) as ws:
            assert ws.subprotocol == "v2"
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
            assert lane_count(daemon) == agents_only + 1  # not Hypercorn's
            await ws.aclose(4321, "peer's own code")
        await tunnel.local.ws_closed.wait()
        while lane_count(daemon) != agents_only:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert tunnel.local.ws_close_codes == [4321]
    (line,) = access_lines(caplog, f"/_t/{CLIENT}/ws")
    assert line.accepted and line.close_code == 4321 and line.client == "127.0.0.1"


async def test_the_apps_close_code_reaches_the_caller_on_the_lane(tunnel: Tunnel) -> None:
    daemon = tunnel.daemon
    agents_only = lane_count(daemon)
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(daemon.ws_url(f"/_t/{CLIENT}/ws")) as ws:
            assert lane_count(daemon) == agents_only + 1
            await ws.send_message("close")  # the local app closes with 4321
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 4321


async def test_idle_timeout_drops_a_silent_tunnelled_websocket(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    relay = {"heartbeat_interval": 0.1, "idle_timeout": 0.5}  # the agent answers its pings
    tunnel = await open_tunnel(nursery, start_daemon, relay=relay)
    agents_only = lane_count(tunnel.daemon)
    stream, connection = await open_raw_websocket(tunnel.daemon, f"/_t/{CLIENT}/ws")
    assert lane_count(tunnel.daemon) == agents_only + 1
    assert await pings_until_dropped(stream, connection) >= 1
    with trio.fail_after(5):
        await tunnel.local.ws_closed.wait()  # the app's socket was closed too
    await stream.aclose()


async def test_moosicbox_socket_keeps_its_own_keepalive_on_the_lane(
    start_daemon: StartDaemon,
) -> None:
    """An app socket gets MoosicBox's ping interval and idle timeout (here 0.1 s / 0.5 s), not
    the relay's (0.2 s / 60 s)."""
    daemon = await start_daemon(
        server={"admin_token": ADMIN},
        relay={"heartbeat_interval": 0.2, "idle_timeout": 60},
        moosicbox={"ping_interval": 0.1, "idle_timeout": 0.5},
    )
    _, signature = await register(daemon, MOOSICBOX_CLIENT)
    before = lane_count(daemon)
    query = f"/ws?clientId={MOOSICBOX_CLIENT}&signature={signature}"
    stream, connection = await open_raw_websocket(daemon, query)
    assert lane_count(daemon) == before + 1
    assert await pings_until_dropped(stream, connection) >= 1
    with trio.fail_after(5):
        while daemon.hub.moosicbox.apps:  # noqa: ASYNC110
            await trio.sleep(0.01)
    await stream.aclose()


async def silent_app(nursery: trio.Nursery) -> int:
    """A local app that accepts connections and never answers: the port it listens on."""

    async def hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, hold, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_a_denial_reaches_the_client_with_its_status_and_json_body(
    nursery: trio.Nursery, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """A tunnelled upgrade the local app never answers waits on the lane, then gets the 504
    with its JSON body and the sandbox of content of others, and the connection closes."""
    caplog.set_level(logging.INFO, "wstund.access")
    daemon = await start_daemon(tunnel={"request_timeout": 1.0})
    secret = await register_client(daemon)
    port = await silent_app(nursery)
    config = AgentConfig(
        server=daemon.url, client_id=CLIENT, secret=secret, target=f"http://127.0.0.1:{port}"
    )
    await run_agent(nursery, Agent(config))
    agents_only = lane_count(daemon)
    target = f"/_t/{CLIENT}/ws"
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(connection.send(wsevents.Request(host="127.0.0.1", target=target)))
    data = b""
    with trio.fail_after(10):
        while lane_count(daemon) != agents_only + 1:  # noqa: ASYNC110
            await trio.sleep(0.01)
        while chunk := await stream.receive_some(65536):  # until the daemon closes
            data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 "), head
    assert json.loads(body)["error"] == "agent_timeout"
    assert b"content-type: application/json" in head.lower()
    assert b"content-security-policy: sandbox" in head.lower()
    (line,) = access_lines(caplog, target)
    assert not line.accepted and line.close_code == 504


async def test_a_tunnelled_upgrade_past_the_caps_gets_the_http_503(
    start_daemon: StartDaemon,
) -> None:
    """At the connection cap the relay's own refusal is for relay clients: any other upgrade
    gets the 503 with the JSON body every HTTP request gets."""
    daemon = await start_daemon(server={"max_connections": 1})
    idle = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    assert daemon.daemon.transport is not None
    with trio.fail_after(10):
        while daemon.daemon.transport.admission.total != 1:  # noqa: ASYNC110
            await trio.sleep(0.01)
        stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
        connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        request = wsevents.Request(host="127.0.0.1", target=f"/_t/{CLIENT}/ws")
        await stream.send_all(connection.send(request))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    await idle.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert json.loads(body)["error"] == "too_many_connections"
    assert b"retry-after: 1" in head.lower()


# -- the adapter on a socket pair, app by app ------------------------------------------------


async def run_app(app: Any, *, send_first: list[Any] | None = None) -> tuple[bytes, Any]:
    """Serve ``app`` on one end of a socket pair for an upgrade the other end sent; what the
    client end read (until the server end closed), and a wsproto client fed the bytes."""
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = connection.send(wsevents.Request(host="x", target="/t?q=1"))
    head = parse_head(request)
    assert head is not None
    tserver = trio.socket.from_stdlib_socket(server)
    tclient = trio.socket.from_stdlib_socket(client)
    ws = LaneSocket(server, tserver, head, FrameCache(), max_message_size=1024)
    data = b""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serving() -> None:
                await asgiws.serve(app, ws, asgiws.websocket_scope(head, ws), False)
                tserver.close()

            nursery.start_soon(serving)
            while chunk := await tclient.recv(65536):
                data += chunk
    tclient.close()
    return data, connection


async def test_a_close_before_the_accept_is_a_403() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        assert scope["path"] == "/t" and scope["query_string"] == b"q=1"
        await send({"type": "websocket.close", "code": 1000})
        assert await receive() == {"type": "websocket.disconnect", "code": 1000}

    data, _ = await run_app(app)
    assert data.startswith(b"HTTP/1.1 403 ")


async def test_an_app_that_fails_unanswered_gives_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("boom")

    data, _ = await run_app(app)
    assert data.startswith(b"HTTP/1.1 500 ")
    assert any("ASGI app" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_an_app_that_ends_with_the_socket_open_closes_it_1011() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hi"})

    data, connection = await run_app(app)
    connection.receive_data(data)
    events = list(connection.events())
    assert isinstance(events[0], wsevents.AcceptConnection)
    assert isinstance(events[1], wsevents.TextMessage) and events[1].data == "hi"
    assert isinstance(events[2], wsevents.CloseConnection) and events[2].code == 1011


async def test_a_denial_in_parts_goes_out_whole_then_receive_says_disconnected() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
        await send({"type": "websocket.http.response.start", "status": 418, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"te", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"apot"})
        for _ in range(2):
            assert await receive() == {"type": "websocket.disconnect", "code": 1000}

    data, _ = await run_app(app)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 418 ") and body == b"teapot"
    assert head.lower().count(b"content-length") == 1 and b"content-length: 6" in head


async def test_header_injection_in_a_denial_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"x-evil", b"a\r\nset-cookie: stolen=1")]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    data, _ = await run_app(app)
    assert data.startswith(b"HTTP/1.1 500 ") and b"stolen" not in data
