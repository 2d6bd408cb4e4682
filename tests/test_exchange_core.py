"""The exchange engine without sockets: the sans-I/O core (events in, actions out) and its trio
edge (waiting for the head, reading the body, timeouts, aborts) with a recording link."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from wstund.exchange import (
    Abort,
    Exchange,
    ExchangeCore,
    ExchangeFailed,
    ExchangeTable,
    FailKind,
    Grant,
    Head,
    Limits,
    TooLarge,
    Truncated,
)
from wstund.exchange.core import PENDING_OVERHEAD

HEAD = Head(200, [("content-type", "text/plain")])


def drain(core: ExchangeCore) -> bytes:
    out = b""
    while (chunk := core.pop()) is not None:
        out += chunk
    return out


def test_streams_in_order_and_grants_credit_in_batches() -> None:
    core = ExchangeCore(Limits(window=100, overdraft=10))
    assert core.on_head(HEAD) == []
    assert core.on_data(b"a" * 60) == []
    assert core.on_data(b"b" * 40) == []
    assert core.outstanding == 100 and core.held == 100
    chunk = core.pop()
    assert chunk == b"a" * 60 + b"b" * 40  # small chunks coalesce: bytes, not objects
    assert core.consumed(len(chunk)) == [Grant(100)]
    assert core.outstanding == 0 and core.held == 0
    assert core.on_end() == [] and core.finished and core.pop() is None


def test_an_owner_past_its_window_is_cut_and_aborted() -> None:
    core = ExchangeCore(Limits(window=100, overdraft=10))
    core.on_head(HEAD)
    assert core.on_data(b"x" * 105) == []  # one frame of overdraft is allowed
    actions = core.on_data(b"x" * 10)
    assert len(actions) == 1 and isinstance(actions[0], Abort)
    assert core.failure is not None and core.failure.kind is FailKind.OVERRUN
    assert core.on_data(b"x" * 10**6) == []  # nothing more is queued once failed
    assert core.held <= 110


def test_credit_free_kinds_cannot_grow_memory() -> None:
    core = ExchangeCore(Limits(window=100, overdraft=10))
    core.on_head(HEAD)
    actions = core.on_head(Head(200, [("x", "y" * 10**6)]))  # a second head breaks the rules
    assert actions and isinstance(actions[0], Abort)
    for _ in range(1000):
        assert core.on_error("e" * 10**6) == []
        assert core.on_head(HEAD) == []
    assert core.failure is not None and len(core.failure.message) < 300
    # An error message is kept short however long the owner makes it.
    other = ExchangeCore(Limits(window=100))
    other.on_error("e" * 10**6)
    assert other.failure is not None and len(other.failure.message) <= 200


def test_empty_frames_cost_credit_and_come_back() -> None:
    core = ExchangeCore(Limits(window=4, overdraft=0, grant_at=2))
    core.on_head(HEAD)
    for _ in range(4):
        assert core.on_data(b"") == []
    assert core.on_data(b"") != []  # a fifth empty frame overruns a 4-byte window


def test_reorders_packets_and_ends_after_the_last() -> None:
    core = ExchangeCore(Limits(window=1000, overdraft=0), ordered=True)
    core.on_head(HEAD)
    core.on_data(b"1", seq=1)
    core.on_data(b"4", seq=4)  # the short last packet overtakes the full ones
    core.on_end(last_seq=4)
    assert not core.finished and drain(core) == b"1"
    core.on_data(b"3", seq=3)
    assert drain(core) == b"" and core.held == 1 + PENDING_OVERHEAD + 1 + PENDING_OVERHEAD
    core.on_data(b"2", seq=2)
    assert core.finished and drain(core) == b"234" and core.held == 0


def test_reorder_buffer_is_bounded() -> None:
    core = ExchangeCore(Limits(window=1000, overdraft=0), ordered=True)
    core.on_head(HEAD)
    actions: list[Any] = []
    for seq in range(2, 100):  # packet 1 never comes: a sender running too far ahead
        actions += core.on_data(b"x" * 100, seq=seq)
        if actions:
            break
    assert isinstance(actions[0], Abort) and core.held == 0
    assert core.failure is not None and core.failure.kind is FailKind.OVERRUN


def test_ordered_protocol_errors() -> None:
    for events in (
        [(b"a", 1), (b"a", 1)],  # duplicate
        [(b"a", 0)],  # before the first
    ):
        core = ExchangeCore(Limits(window=100), ordered=True)
        core.on_head(HEAD)
        actions = [a for chunk, seq in events for a in core.on_data(chunk, seq)]
        assert actions and core.failure is not None and core.failure.kind is FailKind.ERROR
    core = ExchangeCore(Limits(window=100), ordered=True)
    core.on_head(HEAD)
    core.on_data(b"a", seq=3)
    assert core.on_end(last_seq=2)  # a packet after the last one


def test_body_before_head_and_timeouts() -> None:
    core = ExchangeCore(Limits(window=100))
    assert core.on_data(b"x") and core.failure is not None
    core = ExchangeCore(Limits(window=100))
    assert core.on_head_timeout(3) == [Abort("no response head within 3 s")]
    assert core.failure is not None
    assert core.failure.kind is FailKind.TIMEOUT


def test_caller_gone_aborts_unfinished_only() -> None:
    core = ExchangeCore(Limits(window=100))
    core.on_head(HEAD)
    core.on_data(b"abc")
    assert core.on_caller_gone() == [Abort("the caller went away")] and core.held == 0
    finished = ExchangeCore(Limits(window=100))
    finished.on_head(HEAD)
    finished.on_end()
    assert finished.on_caller_gone() == []
    lost = ExchangeCore(Limits(window=100))
    assert lost.on_owner_lost() == [] and lost.on_caller_gone() == []


class Recorder:
    def __init__(self) -> None:
        self.grants: list[int] = []
        self.aborts: list[str] = []

    def grant(self, exchange: Exchange[Any], credit: int) -> None:
        self.grants.append(credit)

    def abort(self, exchange: Exchange[Any], reason: str) -> None:
        self.aborts.append(reason)


def open_exchange(limits: Limits) -> tuple[ExchangeTable[int], Exchange[int], Recorder]:
    table: ExchangeTable[int] = ExchangeTable(itertools.count(1).__next__)
    link = Recorder()
    return table, table.open("owner", link, limits), link


async def test_edge_streams_body_and_frees_everything() -> None:
    table, exchange, link = open_exchange(Limits(window=8, overdraft=8, grant_at=4))
    received: list[bytes] = []

    async def caller() -> None:
        head = await exchange.wait_head(5)
        assert head.status == 200
        async for chunk in exchange.body(5):
            received.append(chunk)
        exchange.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        exchange.on_head(200, [])
        for piece in (b"abcd", b"efgh", b"ij"):
            exchange.on_data(piece)
            await trio.testing.wait_all_tasks_blocked()
        exchange.on_end()
    assert b"".join(received) == b"abcdefghij"
    assert link.grants == [4, 4] and link.aborts == []
    assert len(table) == 0 and table.held == 0 and table.peak_held > 0


async def test_edge_head_timeout_is_504_kind_and_aborts(autojump_clock: Any) -> None:
    table, exchange, link = open_exchange(Limits(window=8))
    with pytest.raises(ExchangeFailed) as failed:
        await exchange.wait_head(30)
    assert failed.value.kind is FailKind.TIMEOUT and link.aborts
    exchange.close()
    assert len(link.aborts) == 1 and len(table) == 0


async def test_edge_owner_lost_truncates_and_idle_timeout(autojump_clock: Any) -> None:
    table, exchange, link = open_exchange(Limits(window=8))
    exchange.on_head(200, [])
    exchange.on_data(b"ab")
    table.owner_lost("owner")
    got = []
    with pytest.raises(Truncated) as cut:
        async for chunk in exchange.body(5):
            got.append(chunk)
    assert got == [b"ab"] and cut.value.kind is FailKind.LOST and link.aborts == []

    table, exchange, link = open_exchange(Limits(window=8))
    exchange.on_head(200, [])
    with pytest.raises(Truncated) as cut:
        async for _ in exchange.body(5):
            pass
    assert cut.value.kind is FailKind.TIMEOUT and link.aborts == ["no data for 5 s"]


async def test_edge_collect_caps_and_caller_gone_aborts_at_once() -> None:
    table, exchange, link = open_exchange(Limits(window=100))
    exchange.on_head(200, [])
    exchange.on_data(b"x" * 60)
    exchange.on_data(b"y" * 30)
    exchange.on_end()
    assert await exchange.collect(100, 5) == b"x" * 60 + b"y" * 30

    table, exchange, link = open_exchange(Limits(window=100))
    exchange.on_head(200, [])
    exchange.on_data(b"x" * 60)
    exchange.on_data(b"x" * 30)
    with pytest.raises(TooLarge):
        await exchange.collect(50, 5)
    assert len(link.aborts) == 1 and len(table) == 0 and table.held == 0

    table, exchange, link = open_exchange(Limits(window=100))
    with trio.move_on_after(0.01):
        try:
            await exchange.wait_head(30)
        finally:
            exchange.close()  # what a front end does when its caller leaves
    assert link.aborts == ["the caller went away"]


async def test_edge_feed_slows_a_waiting_owner(autojump_clock: Any) -> None:
    table, exchange, link = open_exchange(Limits(window=10, overdraft=None))
    exchange.on_head(200, [])
    await exchange.feed(b"x" * 8, 5)
    fed = trio.Event()

    async def owner() -> None:
        await exchange.feed(b"y" * 8, 5)
        fed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(owner)
        await trio.testing.wait_all_tasks_blocked()
        assert not fed.is_set() and exchange.core.held == 8
        assert exchange.core.pop() == b"x" * 8
        exchange._apply([])
    assert fed.is_set() and exchange.core.held == 8
    await exchange.feed(b"z" * 8, 5)  # nobody reads: the owner waits, then the exchange fails
    assert exchange.failure is not None and link.aborts == ["the caller stopped reading"]


class Sink:
    """A socket stand-in that records writes and can be held up."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.gate = trio.Event()
        self.gate.set()

    async def write(self, data: Any) -> None:
        await self.gate.wait()
        self.written.append(data)


async def test_writer_is_fifo_bounded_and_cancel_safe() -> None:
    from wstund.tunnel.writer import FrameWriter

    sink = Sink()
    sink.gate = trio.Event()  # the socket is stuck
    writer = FrameWriter(sink.write, max_queued=10, max_posted=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.send(b"a" * 6)  # fits at once
        await trio.testing.wait_all_tasks_blocked()  # the writer holds "a" in its write
        await writer.send(b"b" * 6)
        order: list[bytes] = []

        async def send(data: bytes) -> None:
            await writer.send(data)
            order.append(data)

        nursery.start_soon(send, b"c" * 6)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as cancelled:  # cancelled while waiting: nothing is written
            cancelled.cancel()
            await writer.send(b"x" * 6)
        nursery.start_soon(send, b"d" * 3)
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and writer.queued == 6  # "d" would fit, but waits its turn
        assert writer.post(b"pp") and writer.post(b"qq") and not writer.post(b"r")
        sink.gate.set()
        while len(sink.written) < 6:
            await trio.testing.wait_all_tasks_blocked()
        writer.close()
    assert sink.written == [b"a" * 6, b"pp", b"qq", b"b" * 6, b"c" * 6, b"d" * 3]
    assert sorted(order) == [b"c" * 6, b"d" * 3]


def test_ordered_packets_may_overtake_the_head() -> None:
    core = ExchangeCore(Limits(window=1000, overdraft=0), ordered=True)
    assert core.on_data(b"3", seq=3) == [] and core.on_end(last_seq=3) == []
    assert core.on_data(b"2", seq=2) == []
    assert core.pop() is None and not core.finished  # nothing reaches the caller before the head
    assert core.on_head(HEAD) == [] and core.pop() is None
    core.on_data(b"1", seq=1)
    assert core.finished and drain(core) == b"123" and core.held == 0
    unordered = ExchangeCore(Limits(window=1000))
    assert unordered.on_end() and unordered.failure is not None  # an end needs a head first
