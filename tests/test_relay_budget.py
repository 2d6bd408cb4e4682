"""Relay memory bounded in bytes, the per-member rate limit, and a member blocked on a full
inbox when its room is destroyed (over real sockets)."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from wstund import closecodes

from .conftest import StartDaemon, create_room, expect_closed, join_room, recv, send

MB = 1024 * 1024


async def test_a_member_flooding_an_away_owner_is_held_to_the_inbox_byte_bound(
    start_daemon: StartDaemon,
) -> None:
    bound = 4 * MB
    daemon = await start_daemon(
        relay={
            "max_inbox_bytes": bound,
            "slow_consumer_timeout": 1.0,
            "owner_grace": 60.0,
            "member_bytes_per_second": 0,
        }
    )
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    await host.aclose()
    assert (await recv(ann))["type"] == "owner_disconnected"
    instance = daemon.hub.instances[uuid]
    frame = json.dumps({"type": "blob", "id": "b", "payload": {"data": "x" * (MB - 100)}})
    peak = 0

    async def flood() -> None:
        for _ in range(40):  # 40 MiB: ten times the bound
            await ann.send_message(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        with trio.fail_after(30):
            busy = None
            while busy is None:
                peak = max(peak, instance.inbox_bytes.used)
                with trio.move_on_after(0.02):
                    busy = await ann.get_message()
        nursery.cancel_scope.cancel()
    # The member was slowed (its frames waited for room), then told the host is not keeping up.
    assert json.loads(busy)["payload"]["code"] == "host_busy"
    assert 0 < peak <= bound


@pytest.mark.parametrize(
    ("limits", "payload"),
    [
        ({"member_messages_per_second": 1, "member_rate_burst": 3.0}, "x"),
        ({"member_bytes_per_second": 3000, "member_rate_burst": 1.0}, "x" * 1000),
    ],
)
async def test_a_member_over_its_rate_gets_rate_limited_then_4029(
    start_daemon: StartDaemon, limits: dict[str, float], payload: str
) -> None:
    daemon = await start_daemon(relay={**limits, "max_rate_limited": 3})
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    for n in range(10):
        await send(ann, "note", {"n": n, "pad": payload}, msg_id=str(n))
    refused = []
    for _ in range(3):
        error = await recv(ann)
        assert error["type"] == "error" and error["payload"]["code"] == "rate_limited", error
        refused.append(error["id"])
    assert await expect_closed(ann) == closecodes.RATE_LIMITED
    delivered = []
    with trio.move_on_after(0.5):
        while True:
            message = await recv(host)
            if message["type"] == "note":
                delivered.append(message["id"])
    # Every frame is either delivered or refused with an error: nothing lost silently.
    assert delivered and not set(delivered) & set(refused)
    assert delivered == sorted(delivered, key=int)
    assert len(delivered) < 10


async def test_the_rate_limit_spares_a_member_within_it(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(relay={"member_messages_per_second": 1, "member_rate_burst": 20.0})
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    for n in range(10):
        await send(ann, "note", {"n": n}, msg_id=str(n))
    got = [(await recv(host))["id"] for _ in range(10)]
    assert got == [str(n) for n in range(10)]


@pytest.mark.parametrize(
    ("limit", "blocked_at"),
    # inbox_size 2: one frame waits in the pump, two in the inbox, the 4th blocks; 1000 bytes:
    # the first (650 B) frame waits in the pump and the 2nd blocks.
    [({"inbox_size": 2}, 4), ({"max_inbox_bytes": 1000}, 2)],
)
async def test_member_blocked_on_a_full_inbox_when_the_room_closes_logs_no_internal_error(
    start_daemon: StartDaemon,
    caplog: pytest.LogCaptureFixture,
    limit: dict[str, int],
    blocked_at: int,
) -> None:
    daemon = await start_daemon(relay={**limit, "slow_consumer_timeout": 30.0, "owner_grace": 60.0})
    host, uuid = await create_room(daemon)
    ann = await join_room(daemon, uuid, "ann", host=host)
    await host.aclose()
    assert (await recv(ann))["type"] == "owner_disconnected"
    instance = daemon.hub.instances[uuid]
    for n in range(5):
        await send(ann, "note", {"n": n, "pad": "x" * 600}, msg_id=str(n))
    # Wait until the member's frames fill the inbox (the member is now blocked on it).
    with trio.fail_after(5):
        while instance.messages_in < blocked_at:
            await trio.sleep(0.01)
    with caplog.at_level(logging.INFO, logger="wstund"):
        assert daemon.hub.close_instance(uuid, "closed_by_admin")
        destroyed = await recv(ann)
        assert destroyed["type"] == "instance_destroyed"
        assert await expect_closed(ann) == closecodes.ROOM_CLOSED
        await trio.sleep(0.1)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
