"""A member that never reads is closed with 4008 while 20 others receive everything."""

from __future__ import annotations

import trio
import trio_websocket

from wstund import closecodes

from .conftest import StartDaemon, connect_stalled, create_room, join_room, recv, send

MESSAGES = 300
SIZE = 32 * 1024


async def test_slow_member_dropped_others_get_everything(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"outbox_size": 64, "slow_consumer_timeout": 0.5})
    host, uuid = await create_room(daemon)
    members = [await join_room(daemon, uuid, f"m{i}", host=host) for i in range(20)]
    stalled = await connect_stalled(daemon)
    await send(stalled, "join_instance", {"uuid": uuid, "userId": "stalled"})
    assert (await recv(stalled))["payload"]["success"] is True
    assert (await recv(host))["type"] == "client_connected"

    received = [0] * len(members)
    host_notes: list[dict[str, object]] = []

    async def read_all(index: int, ws: trio_websocket.WebSocketConnection) -> None:
        for expected in range(MESSAGES):
            message = await recv(ws, timeout=30)
            assert message["payload"]["n"] == expected
            received[index] += 1

    async def read_host() -> None:
        host_notes.append(await recv(host, timeout=30))

    padding = "x" * SIZE
    async with trio.open_nursery() as readers:
        readers.start_soon(read_host)
        for index, ws in enumerate(members):
            readers.start_soon(read_all, index, ws)
        for n in range(MESSAGES):
            await send(host, "tick", {"n": n, "pad": padding})
    assert received == [MESSAGES] * len(members)
    # The host learnt the stalled member left; nobody else left.
    assert host_notes == [
        {"type": "client_disconnected", "payload": {"userId": "stalled", "instanceUuid": uuid}}
    ]
    assert sorted(daemon.hub.instances[uuid].members) == sorted(f"m{i}" for i in range(20))

    # Reading again, the stalled member gets what was in flight, then the 4008 close.
    got = 0
    with trio.fail_after(15):
        try:
            while True:
                await stalled.get_message()
                got += 1
        except trio_websocket.ConnectionClosed as closed:
            assert closed.reason.code == closecodes.SLOW_CONSUMER
    assert got < MESSAGES
    assert daemon.hub.metrics.slow_consumer_drops._value.get() == 1


async def test_never_reading_socket_is_aborted_by_send_timeout(start_daemon: StartDaemon) -> None:
    """Hypercorn cannot cancel a blocked write; the kernel's send timeout frees the socket."""
    daemon = await start_daemon(
        server={"send_timeout": 1.0},
        relay={"outbox_size": 4, "slow_consumer_timeout": 0.2, "idle_timeout": 0},
    )
    host, uuid = await create_room(daemon)
    stalled = await connect_stalled(daemon)
    await send(stalled, "join_instance", {"uuid": uuid, "userId": "stalled"})
    assert (await recv(stalled))["payload"]["success"] is True
    assert (await recv(host))["type"] == "client_connected"
    padding = "x" * SIZE
    for n in range(200):
        await send(host, "tick", {"n": n, "pad": padding})
        if daemon.hub.connection_count == 1:
            break
    assert (await recv(host))["type"] == "client_disconnected"
    with trio.fail_after(20):
        while daemon.hub.connection_count > 1:
            await trio.sleep(0.05)
