"""The MoosicBox-compatible endpoint end to end: a real wstund, our MoosicBox-format sender, a
real local HTTP app, callers with httpx and app sockets with trio-websocket, all on loopback."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto.events as wsevents

from .browser import Browser
from .conftest import RunningDaemon, StartDaemon, expect_closed, open_raw_websocket
from .localapp import LocalApp, pattern_sha256, start_local_app
from .moosicbox_sender import (
    ADMIN,
    FakeSender,
    Frame,
    connect_sender,
    last_first,
    packets,
    pairs_swapped,
    register,
)
from .test_auth import _rejection

CLIENT = "5d0f3c2a-8b1e-4f7a-9c6d-2e4b8a1f0c93"
OTHER = "7a1b2c3d-0000-4000-8000-000000000002"
MB = 1024 * 1024


@dataclass
class Setup:
    daemon: RunningDaemon
    local: LocalApp
    access: str
    signature: str
    sender: FakeSender

    def url(self, path: str, query: str = "") -> str:
        sep = "&" if query else ""
        return f"{self.daemon.url}{path}?{query}{sep}clientId={CLIENT}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": self.access}


async def setup(nursery: trio.Nursery, start_daemon: StartDaemon, **kwargs: Any) -> Setup:
    overrides = dict(kwargs.pop("overrides", {}))
    server = {"admin_token": ADMIN, **overrides.pop("server", {})}
    daemon = await start_daemon(server=server, **overrides)
    local = await start_local_app(nursery)
    access, signature = await register(daemon, CLIENT)
    sender = await connect_sender(daemon, CLIENT, signature, local.url, **kwargs)
    return Setup(daemon, local, access, signature, sender)


async def get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(10):
            return await http.request(kwargs.pop("method", "GET"), url, **kwargs)


async def test_streamed_get_is_byte_identical(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """5 MB through the sender: status, headers and every byte as the local app sent them."""
    s = await setup(nursery, start_daemon)
    r = await get(s.url("/bytes", f"n={5 * MB}"), headers=s.auth)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert len(r.content) == 5 * MB
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(5 * MB)
    assert "content-length" not in r.headers  # streamed: chunked, as it arrives


@pytest.mark.parametrize("order", [last_first, pairs_swapped])
async def test_packets_out_of_order_are_reassembled(
    nursery: trio.Nursery, start_daemon: StartDaemon, order: Any
) -> None:
    s = await setup(nursery, start_daemon, order=order)
    r = await get(s.url("/bytes", f"n={MB + 12345}"), headers=s.auth)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(MB + 12345)


async def test_post_json_frame_is_exact(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    """The HTTP frame the sender reads: path without '/', query as strings (percent-decoded,
    '+' kept), the JSON payload, only accept/range headers, the profile; u64 request id."""
    s = await setup(nursery, start_daemon)
    body = {"k": [1, 2], "big": 12345678901234567890, "text": "é"}
    r = await get(
        s.url("/echo", "alpha=1&beta=a%20b+c&alpha=2"),
        method="POST",
        headers={
            "Authorization": f"Bearer {s.access}",
            "Accept": "application/json",
            "X-Secret": "not forwarded",
            "moosicbox-profile": "master",
        },
        content=json.dumps(body).encode(),
    )
    assert r.status_code == 201
    assert json.loads(r.content) == body
    assert r.headers["x-method"] == "POST"
    frame = s.sender.http_frames[-1]
    data = frame.data
    assert list(data) == [
        "type",
        "request_id",
        "method",
        "path",
        "query",
        "payload",
        "headers",
        "encoding",
        "profile",
    ]
    assert data["type"] == "HTTP" and data["method"] == "POST" and data["path"] == "echo"
    assert data["query"] == {"alpha": "2", "beta": "a b+c", "clientId": CLIENT}
    assert data["payload"] == body
    assert data["headers"] == {"accept": "application/json"}
    assert data["encoding"] == "BINARY" and data["profile"] == "master"
    assert isinstance(data["request_id"], int) and 0 < data["request_id"] < 2**64
    assert f'"request_id":{data["request_id"]},' in frame.text  # an exact JSON integer


async def test_get_frame_omits_payload_and_headers(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(nursery, start_daemon)
    r = await get(s.url("/echo"), headers={"Authorization": f"bearer {s.access}"})
    assert r.status_code == 201
    data = s.sender.http_frames[-1].data
    assert "payload" not in data and data["profile"] is None
    assert data["headers"] == {"accept": "*/*"}  # httpx's; its other headers stay behind


async def test_blocking_mode_answers_with_content_length(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(nursery, start_daemon, order=last_first)
    r = await get(s.url("/bytes", f"n={300_000}&_buffer=1"), headers=s.auth)
    assert r.status_code == 200
    assert r.headers["content-length"] == "300000"
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(300_000)
    assert "_buffer" not in s.sender.http_frames[-1].data["query"]


async def test_blocking_client_in_config_and_its_cap(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(
        nursery,
        start_daemon,
        overrides={"moosicbox": {"buffered_clients": [CLIENT], "max_buffered_bytes": 200_000}},
    )
    r = await get(s.url("/bytes", "n=100000"), headers=s.auth)
    assert r.headers["content-length"] == "100000"
    r = await get(s.url("/bytes", "n=300000"), headers=s.auth)
    assert r.status_code == 502
    assert r.json()["error"] == "response_too_large"


async def test_offline_client_is_424(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"admin_token": ADMIN})
    access, _ = await register(daemon, OTHER)
    r = await get(f"{daemon.url}/api/x?clientId={OTHER}", headers={"Authorization": access})
    assert r.status_code == 424
    assert r.text == "Client with ID is not connected"


async def test_auth_refusals(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    s = await setup(nursery, start_daemon)
    base = s.daemon.url
    r = await get(f"{base}/api/x?clientId={CLIENT}", headers={"Authorization": "wrong"})
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(f"{base}/api/x?clientId={CLIENT}")
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(f"{base}/api/x?clientId={OTHER}", headers=s.auth)  # another client's id
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(f"{base}/auth/register-client?clientId=x", method="POST")
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(f"{base}/auth/register-client", method="POST", headers={"Authorization": ADMIN})
    assert r.status_code == 400
    assert r.text == "Query deserialize error: missing field `clientId`"
    r = await get(f"{base}/auth/signature-token?clientId={OTHER}", method="POST", headers=s.auth)
    assert (r.status_code, r.text) == (401, "Unauthorized")
    valid = f"{base}/auth/validate-signature-token?signature={s.signature}&clientId={CLIENT}"
    assert (await get(valid, method="POST")).json() == {"valid": True}
    wrong = f"{base}/auth/validate-signature-token?signature=nope&clientId={CLIENT}"
    assert (await get(wrong, method="POST")).status_code == 401
    assert s.sender.http_frames == []  # nothing reached the sender


async def test_second_client_id_never_reroutes(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """?clientId=A&clientId=B with A's token is carried to A (MoosicBox's server sent it to B)."""
    s = await setup(nursery, start_daemon)
    _, other_signature = await register(s.daemon, OTHER)
    other = await connect_sender(s.daemon, OTHER, other_signature, s.local.url)
    r = await get(f"{s.daemon.url}/echo?clientId={CLIENT}&clientId={OTHER}", headers=s.auth)
    assert r.status_code == 201
    assert other.http_frames == []
    assert s.sender.http_frames[-1].data["query"]["clientId"] == CLIENT


async def test_files_routes_need_the_signature(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(nursery, start_daemon)
    base = s.daemon.url
    track = f"{base}/files/track?trackId=7&clientId={CLIENT}&signature={s.signature}"
    r = await get(track, headers={"Range": "bytes=0-9", "moosicbox-profile": "p"})
    assert r.status_code == 404  # the local app has no such route; the sender answered
    data = s.sender.http_frames[-1].data
    assert data["path"] == "files/track" and data["headers"] == {
        "accept": "*/*",
        "range": "bytes=0-9",
    }
    assert data["query"]["trackId"] == "7" and data["profile"] == "p"
    r = await get(f"{base}/files/albums/3/300x300?clientId={CLIENT}&signature={s.access}")
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(f"{base}/files/artists/3/300x300?clientId={CLIENT}&signature={s.signature}")
    assert s.sender.http_frames[-1].data["path"] == "files/artists/3/300x300"


async def test_no_first_packet_is_504(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    async def silent(sender: FakeSender, frame: Frame) -> None:
        return

    s = await setup(
        nursery, start_daemon, handler=silent, overrides={"moosicbox": {"request_timeout": 0.3}}
    )
    r = await get(s.url("/echo"), headers=s.auth)
    assert r.status_code == 504
    assert r.json()["error"] == "sender_timeout"
    with trio.fail_after(5):
        await s.sender.got_abort.wait()  # the sender stops working on it


async def test_sender_drop_fails_in_flight_requests(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """Before the head: 502. After it: the body is cut (the connection drops), never a hang."""
    s = await setup(nursery, start_daemon)

    async def drop(sender: FakeSender, frame: Frame) -> None:
        await sender.ws.aclose()

    s.sender.handler = drop
    r = await get(s.url("/echo"), headers=s.auth)
    assert r.status_code == 502
    assert r.json()["error"] == "sender_error"

    access, signature = s.access, s.signature
    second = await connect_sender(s.daemon, CLIENT, signature, s.local.url)

    async def head_then_drop(sender: FakeSender, frame: Frame) -> None:
        rid = frame.data["request_id"]
        parts = packets(rid, 200, {"content-length": "1000000"}, b"x" * 1_000_000)
        await sender.ws.send_message(parts[0])
        await sender.ws.aclose()

    second.handler = head_then_drop
    with pytest.raises(httpx.RemoteProtocolError):
        await get(s.url("/echo"), headers={"Authorization": access})


async def test_caller_leaving_sends_abort(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    """The ABORT goes out as soon as the caller leaves, not on the sender's next packet."""
    stalled = trio.Event()

    async def first_packet_only(sender: FakeSender, frame: Frame) -> None:
        rid = frame.data["request_id"]
        parts = packets(rid, 200, {}, b"y" * 200_000)
        await sender.ws.send_message(parts[0])
        stalled.set()

    s = await setup(nursery, start_daemon, handler=first_packet_only)
    async with httpx.AsyncClient() as http:
        with trio.fail_after(5):
            async with http.stream("GET", s.url("/big"), headers=s.auth) as response:
                assert response.status_code == 200
                await stalled.wait()
    with trio.fail_after(1):
        await s.sender.got_abort.wait()
    assert s.sender.aborted == [s.sender.http_frames[-1].data["request_id"]]


async def test_body_over_the_limit_is_413(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    s = await setup(nursery, start_daemon, overrides={"moosicbox": {"max_request_body": 1000}})
    r = await get(s.url("/echo"), method="POST", headers=s.auth, content=b"[" + b"1," * 600 + b"1]")
    assert r.status_code == 413
    r = await get(s.url("/echo"), method="POST", headers=s.auth, content=b"not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    assert s.sender.http_frames == []


async def app_socket(
    daemon: RunningDaemon, client_id: str, signature: str, profile: str = "master"
) -> trio_websocket.WebSocketConnection:
    query = f"moosicboxProfile={profile}&clientId={client_id}&signature={signature}"
    return await trio_websocket.connect_websocket_url(daemon.nursery, daemon.ws_url("/ws", query))


async def recv_json(ws: trio_websocket.WebSocketConnection) -> Any:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())


async def test_app_socket_messages_and_pushes_stay_with_their_client(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """An app's message reaches its sender as a WS frame; replies by request id, pushes to a
    connection and broadcasts reach that client's app sockets, never another client's."""
    s = await setup(nursery, start_daemon)
    _, other_signature = await register(s.daemon, OTHER)
    other = await connect_sender(s.daemon, OTHER, other_signature, s.local.url)
    mine = await app_socket(s.daemon, CLIENT, s.signature)
    theirs = await app_socket(s.daemon, OTHER, other_signature, profile="other")

    await mine.send_message('{"type":"GET_CONNECTION_ID","n":12345678901234567890}')
    with trio.fail_after(5):
        await s.sender.got_ws.wait()
    frame = s.sender.ws_frames[-1]
    assert list(frame) == ["type", "conn_id", "request_id", "body", "profile"]
    assert frame["body"] == {"type": "GET_CONNECTION_ID", "n": 12345678901234567890}
    assert frame["profile"] == "master"
    conn = frame["conn_id"]
    await theirs.send_message('{"type":"PING"}')
    with trio.fail_after(5):
        await other.got_ws.wait()
    their_conn = other.ws_frames[-1]["conn_id"]
    assert s.sender.ws_frames == [frame]  # the other client's app never reaches this sender

    await s.sender.push({"type": "REPLY"}, request_id=frame["request_id"])
    assert await recv_json(mine) == {"type": "REPLY"}
    await s.sender.push(
        {"type": "CONNECTION_ID", "connectionId": str(conn)}, to_connection_ids=[conn, their_conn]
    )
    assert await recv_json(mine) == {"type": "CONNECTION_ID", "connectionId": str(conn)}
    await s.sender.push({"type": "ALL"})  # request_id 0, no routing: every app of CLIENT
    assert await recv_json(mine) == {"type": "ALL"}
    await s.sender.push({"type": "NOT_ME"}, exclude_connection_ids=[conn])
    await other.push({"type": "THEIRS"})
    assert await recv_json(theirs) == {"type": "THEIRS"}  # nothing of CLIENT's came first
    await s.sender.push({"type": "LAST"})
    assert await recv_json(mine) == {"type": "LAST"}  # NOT_ME was never delivered to mine


async def test_app_socket_cannot_send_packets_or_garbage(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """Binary from an app socket is never taken as a response packet (closed 1003); a
    non-JSON text closes it with 1007; the sender and other requests are unharmed."""
    answered = trio.Event()
    ids: list[int] = []

    async def hold(sender: FakeSender, frame: Frame) -> None:
        ids.append(frame.data["request_id"])
        await answered.wait()
        await sender.respond(frame.data["request_id"], 200, {}, b"from the sender")

    s = await setup(nursery, start_daemon, handler=hold)
    async with trio.open_nursery() as inner:
        results: list[httpx.Response] = []

        async def call() -> None:
            results.append(await get(s.url("/x"), headers=s.auth))

        inner.start_soon(call)
        with trio.fail_after(5):
            await s.sender.got_http.wait()
        app = await app_socket(s.daemon, CLIENT, s.signature)
        await app.send_message(packets(ids[0], 200, {}, b"forged")[0])
        assert await expect_closed(app) == 1003
        app = await app_socket(s.daemon, CLIENT, s.signature)
        await app.send_message("TUNNEL_RESPONSE:1|1|1200|{}|")
        assert await expect_closed(app) == 1007
        answered.set()
    assert results[0].content == b"from the sender"


async def test_garbled_sender_frames_fail_only_their_request(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """A frame shorter than 13 bytes is dropped; packet 1 with bad header JSON fails its own
    request (502, ABORT); unparsable text is dropped; the sender keeps serving."""

    async def garble(sender: FakeSender, frame: Frame) -> None:
        rid = frame.data["request_id"]
        await sender.ws.send_message(b"\x00\x01short")
        await sender.ws.send_message("not json at all")
        await sender.ws.send_message(struct.pack(">QIBHI", rid, 1, 1, 200, 9) + b"{not json")

    s = await setup(nursery, start_daemon, handler=garble)
    r = await get(s.url("/x"), headers=s.auth)
    assert r.status_code == 502
    assert "not JSON" in r.json()["message"]
    with trio.fail_after(5):
        await s.sender.got_abort.wait()
    s.sender.handler = None
    r = await get(s.url("/echo"), headers=s.auth)
    assert r.status_code == 201


def _before_head(parts: list[bytes]) -> list[bytes]:
    return [*parts[1:], parts[0]]  # every packet before packet 1


def _gap_after_head(parts: list[bytes]) -> list[bytes]:
    return [parts[0], *parts[2:], parts[1]]  # packet 2 last: the rest wait for it


@pytest.mark.parametrize("order", [_before_head, _gap_after_head])
async def test_sender_running_too_far_ahead_loses_the_request(
    nursery: trio.Nursery, start_daemon: StartDaemon, order: Any
) -> None:
    """Packets held out of order count against max_pending_bytes: past it, ABORT and 502."""
    s = await setup(
        nursery, start_daemon, order=order, overrides={"moosicbox": {"max_pending_bytes": 200_000}}
    )
    r = await get(s.url("/bytes", "n=1000000&_buffer=1"), headers=s.auth)
    assert r.status_code == 502
    with trio.fail_after(5):
        await s.sender.got_abort.wait()
    r = await get(s.url("/bytes", "n=150000"), headers=s.auth)
    assert len(r.content) == 150000


async def test_second_sender_replaces_and_closes_the_first(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(nursery, start_daemon)
    first_ws = s.sender.ws
    second = await connect_sender(s.daemon, CLIENT, s.signature, s.local.url)
    with trio.fail_after(5):
        while not first_ws.closed:
            await trio.sleep(0.01)
    assert first_ws.closed.code == 4009
    r = await get(s.url("/echo"), headers=s.auth)
    assert r.status_code == 201
    assert len(second.http_frames) == 1


async def test_socket_handshake_refusals(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    s = await setup(nursery, start_daemon)
    for query, status in (
        (f"clientId={CLIENT}&sender=true&signature=wrong", 401),
        (f"clientId={CLIENT}&sender=yes&signature={s.signature}", 400),
        (f"clientId={OTHER}&signature={s.signature}", 401),
    ):
        assert await _rejection(s.daemon, query) == status


async def test_magic_token_pairing_round_trip(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """The MoosicBox server stores a magic token; an app trades it, through the sender, for
    the client id and access token (GET /auth/magic-token has no other credential)."""

    async def local_pairing(sender: FakeSender, frame: Frame) -> None:
        data = frame.data
        assert (data["path"], data["query"]) == ("auth/magic-token", {"magicToken": "m-1"})
        body = json.dumps({"clientId": CLIENT, "accessToken": "local"}).encode()
        await sender.respond(data["request_id"], 200, {"content-type": "application/json"}, body)

    s = await setup(nursery, start_daemon, handler=local_pairing)
    base = s.daemon.url
    r = await get(f"{base}/auth/magic-token?clientId={CLIENT}&magicToken=m-1", method="POST")
    assert (r.status_code, r.text) == (401, "Unauthorized")
    r = await get(
        f"{base}/auth/magic-token?clientId={CLIENT}&magicToken=m-1", method="POST", headers=s.auth
    )
    assert r.json() == {"success": True}
    r = await get(f"{base}/auth/magic-token?magicToken=m-1")
    assert r.json() == {"clientId": CLIENT, "accessToken": "local"}
    r = await get(f"{base}/auth/magic-token?magicToken=m-2")
    assert (r.status_code, r.text) == (401, "Unauthorized")


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """Trio's virtual clock, jumping ahead whenever every task has waited 20 ms of real time
    (loopback I/O is quicker): the daemon's 5 s pings and 10 s idle timeout pass at once."""
    return trio.testing.MockClock(autojump_threshold=0.02)


async def test_silent_sender_dropped_after_10_to_15_seconds(
    nursery: trio.Nursery, start_daemon: StartDaemon, virtual_clock: trio.testing.MockClock
) -> None:
    """MoosicBox's heartbeat (ping every 5 s, silent for 10 s: closed), in virtual time; a
    sender that answers pings stays."""
    daemon = await start_daemon(server={"admin_token": ADMIN})
    local = await start_local_app(nursery)
    _, signature = await register(daemon, CLIENT)
    _, other_signature = await register(daemon, OTHER)
    live = await connect_sender(daemon, OTHER, other_signature, local.url)
    query = f"/ws?clientId={CLIENT}&sender=true&signature={signature}"
    stream, connection = await open_raw_websocket(daemon, query)
    started = trio.current_time()
    pings = 0
    with trio.fail_after(60):
        while not isinstance(
            event := await _next_event(stream, connection), wsevents.CloseConnection
        ):
            pings += isinstance(event, wsevents.Ping)
    assert 10 <= trio.current_time() - started <= 15
    assert pings >= 1
    with trio.fail_after(1):  # the handler forgets the sender once its socket is done
        while CLIENT in daemon.hub.moosicbox.senders:
            await trio.sleep(0.01)
    await trio.sleep(60)
    assert daemon.hub.moosicbox.senders[OTHER].ws is not None and not live.ws.closed
    await stream.aclose()


async def _next_event(stream: trio.SocketStream, connection: Any) -> Any:
    while True:
        for event in connection.events():
            return event
        data = await stream.receive_some(65536)
        if not data:
            return wsevents.CloseConnection(code=1006)
        connection.receive_data(data)


async def test_cors_for_browser_apps(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    """The web app calls from its own origin: preflights answered, answers carry CORS headers."""
    s = await setup(nursery, start_daemon)
    origin = {"Origin": "https://app.example"}
    preflight = await get(
        s.url("/echo"),
        method="OPTIONS",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    r = await get(s.url("/echo"), headers={**origin, **s.auth})
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert len(s.sender.http_frames) == 1  # the preflight never reached the sender


async def test_graceful_stop_closes_senders_and_app_sockets(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    s = await setup(nursery, start_daemon)
    app = await app_socket(s.daemon, CLIENT, s.signature)
    s.daemon.daemon.stop()
    assert await expect_closed(app) == 1001
    with trio.fail_after(5):
        while not s.sender.ws.closed:
            await trio.sleep(0.01)
    assert s.sender.ws.closed.code == 1001


async def test_app_socket_limits(nursery: trio.Nursery, start_daemon: StartDaemon) -> None:
    """Past max_app_sockets_per_client: 503. An app that stops reading while its sender pushes
    is closed with 4008 once app_outbox_size messages wait; the sender is never held."""
    s = await setup(
        nursery,
        start_daemon,
        overrides={
            "moosicbox": {"max_app_sockets_per_client": 1, "app_outbox_size": 2},
            "server": {"send_timeout": 1.0},
        },
    )
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", s.daemon.port))
    await trio_websocket.wrap_client_stream(
        s.daemon.nursery,
        trio.SocketStream(sock),
        "127.0.0.1",
        f"/ws?clientId={CLIENT}&signature={s.signature}",
        message_queue_size=0,
    )
    query = f"clientId={CLIENT}&signature={s.signature}"
    assert await _rejection(s.daemon, query) == 503
    (app,) = s.daemon.hub.moosicbox.apps[CLIENT].values()
    with trio.fail_after(10):
        while app.close_code is None:
            await s.sender.push({"fill": "x" * 60_000})
            await trio.sleep(0.01)
    assert app.close_code == 4008
    with trio.fail_after(10):  # its socket goes once the kernel gives up (send_timeout)
        while s.daemon.hub.moosicbox.apps:
            await trio.sleep(0.05)
    r = await get(s.url("/echo"), headers=s.auth)  # the sender still serves
    assert r.status_code == 201


async def test_disabled_endpoint_leaves_the_paths_to_wstund(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"admin_token": ADMIN}, moosicbox={"enabled": False})
    r = await get(f"{daemon.url}/auth/register-client?clientId=x", method="POST",
                  headers={"Authorization": ADMIN})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await get(f"{daemon.url}/api/x?clientId=x")
    assert r.status_code == 404


PROBE_PAGE = b"""<!doctype html><title>probe</title><script>
let storage = "storage";
try { localStorage.setItem("x", "1"); } catch (e) { storage = "no storage"; }
document.title = String(window.origin) + "|" + storage;
</script>"""


@pytest.mark.parametrize(
    "policy", ["default-src * 'unsafe-inline'", "sandbox allow-same-origin allow-scripts"]
)
async def test_a_senders_page_runs_sandboxed_in_chromium(
    nursery: trio.Nursery,
    start_daemon: StartDaemon,
    open_browser: Callable[..., Awaitable[Browser]],
    policy: str,
) -> None:
    """A signature link opened in a browser shows what the MoosicBox server sent on wstund's
    origin; a page in it gets an opaque origin: no storage, no cookies, no API of this origin
    (even when it names a policy of its own)."""

    async def evil(sender: FakeSender, frame: Frame) -> None:
        headers = {"content-type": "text/html", "content-security-policy": policy}
        await sender.respond(frame.data["request_id"], 200, headers, PROBE_PAGE)

    s = await setup(nursery, start_daemon, handler=evil)
    browser = await open_browser()
    await browser.get(
        f"{s.daemon.url}/files/track?trackId=1&clientId={CLIENT}&signature={s.signature}"
    )
    assert await browser.wait_js("document.title.includes('|') && document.title") == (
        "null|no storage"
    )


async def slow_get(port: int, target: str, token: str, stall: trio.Event | None = None) -> bytes:
    """GET with a 16 KiB receive buffer, read a little at a time (the caller of a slow link);
    with ``stall``, stop reading after the head until it is set. Returns the body."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target=target, headers=[("host", "x"), ("authorization", token)]
    )
    await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            await trio.sleep(0.001)
            client.receive_data(await stream.receive_some(16 * 1024))
        elif isinstance(event, h11.Response) and stall is not None:
            await stall.wait()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            await stream.aclose()
            return bytes(body)


async def test_slow_caller_slows_the_sender_instead_of_losing_the_request(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """A caller reading slower than the sender sends: past max_pending_bytes the sender is
    slowed (its socket is not read), and every byte arrives."""
    s = await setup(nursery, start_daemon, overrides={"moosicbox": {"max_pending_bytes": 200_000}})
    size = 8 * MB
    with trio.fail_after(60):
        body = await slow_get(s.daemon.port, f"/bytes?n={size}&clientId={CLIENT}", s.access)
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
    assert s.sender.aborted == []


async def test_stalled_caller_loses_only_its_request(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """A caller that takes nothing for stall_timeout past max_pending_bytes: its request is
    aborted at the sender, which goes on serving the others."""
    s = await setup(
        nursery,
        start_daemon,
        overrides={"moosicbox": {"max_pending_bytes": 200_000, "stall_timeout": 0.5}},
    )
    stall = trio.Event()
    nursery.start_soon(
        slow_get, s.daemon.port, f"/bytes?n={8 * MB}&clientId={CLIENT}", s.access, stall
    )
    with trio.fail_after(10):
        await s.sender.got_abort.wait()
    r = await get(s.url("/echo"), headers=s.auth)
    assert r.status_code == 201
    stall.set()
