"""Frames queued for one socket leave in batched writes, complete and in order.

A host that stops reading lets its outbox fill while two members keep sending; once it reads
again, each flush writes the queued frames behind the first in one socket write. Every frame
must still arrive, each member's in its own order.
"""

from __future__ import annotations

import trio
import trio_websocket

from .conftest import StartDaemon, connect_stalled, join_room, recv, send

MEMBERS = 2
MESSAGES = 400
SIZE = 16 * 1024  # 2 × 400 × 16 KiB = 12.8 MB for the host: more than the kernel buffers hold


async def test_queued_frames_reach_a_host_batched_and_in_order(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"slow_consumer_timeout": 60})
    host = await connect_stalled(daemon)
    await send(host, "create_instance", {"name": "burst"}, service="chat", msg_id="create")
    created = await recv(host)
    uuid = created["payload"]["uuid"]
    owner = daemon.hub.instances[uuid].owner
    assert owner is not None
    members = [await join_room(daemon, uuid, f"m{i}") for i in range(MEMBERS)]

    async def drain(ws: trio_websocket.WebSocketConnection) -> None:
        for _ in range((MEMBERS - 1) * MESSAGES):  # each member hears the others
            await recv(ws, timeout=30)

    padding = "x" * SIZE
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for ws in members:
                nursery.start_soon(drain, ws)
            for n in range(MESSAGES):
                for i, ws in enumerate(members):
                    await send(ws, "burst", {"who": i, "n": n, "pad": padding})
            # The host has not read: its socket is full and frames wait in its outbox.
            while owner.queued < 100:  # noqa: ASYNC110
                await trio.sleep(0.01)

            next_n = [0] * MEMBERS
            while next_n != [MESSAGES] * MEMBERS:
                message = await recv(host, timeout=30)
                if message["type"] != "burst":
                    assert message["type"] == "client_connected", message
                    continue
                who, n = message["payload"]["who"], message["payload"]["n"]
                assert n == next_n[who], f"member {who}: got {n}, expected {next_n[who]}"
                next_n[who] += 1

    assert owner.frames_sent >= MEMBERS * MESSAGES
    # 16 KiB frames, 64 KiB batches (relay.write_batch_bytes): several frames per write.
    assert owner.writes < owner.frames_sent * 2 / 3, (owner.writes, owner.frames_sent)
    assert daemon.hub.metrics.slow_consumer_drops._value.get() == 0


async def test_batching_off_writes_each_frame_alone(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"write_batch_bytes": 0})
    host = await connect_stalled(daemon)
    await send(host, "create_instance", {"name": "one by one"}, service="chat")
    uuid = (await recv(host))["payload"]["uuid"]
    owner = daemon.hub.instances[uuid].owner
    assert owner is not None
    member = await join_room(daemon, uuid, "m")
    for n in range(50):
        await send(member, "burst", {"n": n, "pad": "x" * SIZE})
    with trio.fail_after(10):
        while owner.queued < 10:  # noqa: ASYNC110
            await trio.sleep(0.01)
    got = [m["payload"]["n"] for m in [await recv(host) for _ in range(51)] if m["type"] == "burst"]
    assert got == list(range(50))
    assert owner.writes == owner.frames_sent
