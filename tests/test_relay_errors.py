"""Bad frames, close codes and every relay limit."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from wstund import closecodes

from .conftest import (
    RunningDaemon,
    StartDaemon,
    connect,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)


async def _error(ws: trio_websocket.WebSocketConnection) -> dict[str, str]:
    reply = await recv(ws)
    assert reply["type"] == "error", reply
    payload: dict[str, str] = reply["payload"]
    assert payload["message"] and payload["error"]
    return payload


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"payload": {}}', "invalid_message"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "x", "id": true}', "invalid_message"),
        ('{"type": "chat_message"}', "unknown_type"),
        ('{"type": "ack", "payload": {}}', "unknown_type"),
        ('{"type": "join_instance", "payload": {"uuid": 5}}', "invalid_payload"),
        ('{"type": "join_instance", "payload": []}', "invalid_payload"),
        ('{"type": "join_instance", "service": "chat"}', "invalid_payload"),
        (
            '{"type": "create_instance", "service": "chat", "payload": {"name": 1}}',
            "invalid_payload",
        ),
        ('{"type": "kick_client", "payload": {}}', "invalid_payload"),
        ("", "invalid_json"),
    ],
)
async def test_bad_frame_gets_error_and_connection_stays(
    wstund: RunningDaemon, frame: str, code: str
) -> None:
    ws = await connect(wstund)
    await ws.send_message(frame)
    assert (await _error(ws))["code"] == code
    await send(ws, "ping", msg_id="still-open")
    assert await recv(ws) == {"type": "pong", "id": "still-open", "payload": {}}


async def test_error_echoes_request_id(wstund: RunningDaemon) -> None:
    ws = await connect(wstund)
    await ws.send_message('{"type": "join_instance", "id": "q1", "payload": {"uuid": []}}')
    reply = await recv(ws)
    assert reply["id"] == "q1" and reply["payload"]["code"] == "invalid_payload"


async def test_binary_before_join(wstund: RunningDaemon) -> None:
    ws = await connect(wstund)
    await ws.send_message(b"\x00\x01")
    assert (await _error(ws))["code"] == "not_joined"
    await ws.send_message(b"")
    assert (await _error(ws))["code"] == "not_joined"


async def test_oversized_frame_closes_only_that_socket(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"max_message_size": 4096})
    host, uuid = await create_room(daemon)
    member = await join_room(daemon, uuid, "ann", host=host)
    big = await connect(daemon)
    await big.send_message("x" * 5000)
    assert await expect_closed(big) == closecodes.MESSAGE_TOO_BIG
    await send(member, "still", {"ok": True})
    assert (await recv(host))["type"] == "still"


async def test_repeated_invalid_frames_close_with_1008(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"max_invalid_messages": 3})
    ws = await connect(daemon)
    other = await connect(daemon)
    for _ in range(3):
        await ws.send_message("{")
    codes = [(await _error(ws))["code"] for _ in range(4)]
    assert codes == ["invalid_json"] * 3 + ["too_many_invalid_messages"]
    assert await expect_closed(ws) == closecodes.POLICY_VIOLATION
    await send(other, "ping")
    assert (await recv(other))["type"] == "pong"


async def test_wrong_server_token_in_payload_is_an_error(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "tok"})
    ws = await connect(daemon, "token=tok")
    await send(ws, "create_instance", {"server_token": "bad"}, service="chat")
    error = await _error(ws)
    assert error["code"] == "invalid_server_token"
    assert error["message"] == "Invalid server auth token"  # the reference's text
    # As in the reference the socket stays open (it passed the handshake's token check).
    await send(ws, "create_instance", {"server_token": "tok"}, service="chat")
    assert (await recv(ws))["payload"]["success"] is True


async def test_origin_refused_with_1008(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"allowed_origins": ["https://good.example"]})
    bad = await connect(daemon, extra_headers=[(b"Origin", b"https://evil.example")])
    assert await expect_closed(bad) == closecodes.POLICY_VIOLATION
    good = await connect(daemon, extra_headers=[(b"Origin", b"https://good.example")])
    await send(good, "ping")
    assert (await recv(good))["type"] == "pong"


async def test_rooms_per_connection(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"max_rooms_per_connection": 2})
    host = await connect(daemon)
    for expected in ("instance_created", "instance_created", "error"):
        await send(host, "create_instance", service="chat")
        reply = await recv(host)
        assert reply["type"] == expected
    assert reply["payload"]["code"] == "too_many_rooms"


async def test_members_per_room(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"max_members_per_room": 2})
    host, uuid = await create_room(daemon)
    await join_room(daemon, uuid, "a", host=host)
    await join_room(daemon, uuid, "b", host=host)
    third = await connect(daemon)
    await send(third, "join_instance", {"uuid": uuid, "userId": "c"})
    assert (await recv(third))["payload"]["code"] == "room_full"


async def test_total_connection_limit(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"max_connections": 2})
    first, second = await connect(daemon), await connect(daemon)
    third = await connect(daemon)
    assert (await _error(third))["code"] == "too_many_connections"
    assert await expect_closed(third) == closecodes.RATE_LIMITED
    await second.aclose()
    with trio.fail_after(5):
        while daemon.hub.connection_count > 1:
            await trio.sleep(0.01)
    fourth = await connect(daemon)
    await send(fourth, "ping")
    assert (await recv(fourth))["type"] == "pong"
    await send(first, "ping")
    assert (await recv(first))["type"] == "pong"


async def test_per_address_connection_limit(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"max_connections_per_ip": 1})
    await connect(daemon)
    second = await connect(daemon)
    assert (await _error(second))["code"] == "too_many_connections"
    assert await expect_closed(second) == closecodes.RATE_LIMITED


async def test_failed_joins_rate_limited(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"failed_joins_per_minute": 3})
    host, uuid = await create_room(daemon, token="pw")
    guesser = await connect(daemon)
    for _ in range(3):
        await send(guesser, "join_instance", {"uuid": uuid, "token": "guess"})
        assert (await recv(guesser))["payload"]["code"] == "invalid_token"
    await send(guesser, "join_instance", {"uuid": uuid, "token": "pw"})
    assert (await _error(guesser))["code"] == "rate_limited"
    assert await expect_closed(guesser) == closecodes.RATE_LIMITED
    # The same address stays limited on a new connection, for joins only.
    again = await connect(daemon)
    await send(again, "join_instance", {"uuid": uuid, "token": "pw"})
    assert (await _error(again))["code"] == "rate_limited"
    await send(host, "ping")
    assert (await recv(host))["type"] == "pong"


async def test_full_inbox_tells_the_member(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        relay={"inbox_size": 2, "slow_consumer_timeout": 0.2, "owner_grace": 30.0}
    )
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    await host.aclose()
    assert (await recv(ann))["type"] == "owner_disconnected"
    # One frame waits in the pump for the owner, two in the inbox; the fourth finds it full.
    for n in range(4):
        await send(ann, "note", {"n": n}, msg_id=str(n))
    error = await recv(ann)
    assert error["id"] == "3" and error["payload"]["code"] == "host_busy"


async def test_heartbeat_pings_and_idle_timeout(start_daemon: StartDaemon) -> None:
    """A client that never answers pings (nor sends anything) is dropped after idle_timeout."""
    import wsproto
    from wsproto.events import AcceptConnection, Ping, Request

    daemon = await start_daemon(relay={"heartbeat_interval": 0.1, "idle_timeout": 0.6})
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target="/ws")))
    events: list[object] = []
    with trio.fail_after(5):
        while True:
            data = await stream.receive_some()
            if not data:
                break
            client.receive_data(data)
            events.extend(client.events())
    assert isinstance(events[0], AcceptConnection)
    assert sum(isinstance(e, Ping) for e in events) >= 2
    assert daemon.hub.connection_count == 0 or await _released(daemon)


async def _released(daemon: RunningDaemon) -> bool:
    with trio.fail_after(5):
        while daemon.hub.connection_count:
            await trio.sleep(0.01)
    return True


async def test_answering_client_is_not_idle(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"heartbeat_interval": 0.1, "idle_timeout": 0.5})
    ws = await connect(daemon)  # trio-websocket answers pings
    await trio.sleep(1.2)
    await send(ws, "ping")
    assert (await recv(ws))["type"] == "pong"
