"""The tunnel wire codec and flow accounting, sans-I/O (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from wstund.tunnel import frames
from wstund.tunnel.flow import ReceiveWindow, SendCredit, StreamGone, frame_cost
from wstund.tunnel.frames import FrameError, Kind
from wstund.tunnel.registry import ClientExists, InvalidClientId, Registry


def test_frame_round_trip() -> None:
    data = frames.encode(Kind.BODY, 7, b"\x00\xffpayload")
    frame = frames.decode(data)
    assert frame == frames.Frame(Kind.BODY, 7, b"\x00\xffpayload")
    assert (
        frames.decode(frames.encode(Kind.END, frames.MAX_STREAM_ID)).stream_id
        == frames.MAX_STREAM_ID
    )


def test_short_and_unknown_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="shorter"):
        frames.decode(b"\x02\x00\x00")
    with pytest.raises(FrameError, match="unknown frame kind 99"):
        frames.decode(bytes([99, 0, 0, 0, 1]))


def test_heads_round_trip_and_validate() -> None:
    head = frames.RequestHead(
        method="POST",
        path="/a%20b",
        query="x=1&x=2",
        headers=[("set-cookie", "a=1"), ("set-cookie", "b=2")],
        body=True,
    )
    frame = frames.decode(frames.encode_request_head(3, head))
    assert frame.kind is Kind.HEAD
    assert frames.decode_request_head(frame.payload) == head
    response = frames.ResponseHead(status=101, subprotocol="chat")
    payload = frames.decode(frames.encode_response_head(3, response)).payload
    assert frames.decode_response_head(payload) == response
    with pytest.raises(FrameError, match="bad response status 99"):
        frames.decode_response_head(b'{"status": 99}')
    with pytest.raises(FrameError, match="bad request head"):
        frames.decode_request_head(b'{"path": "/"}')


def test_whole_response_round_trips_and_is_checked() -> None:
    head = frames.ResponseHead(status=200, headers=[("content-type", "text/plain")])
    frame = frames.decode(frames.encode_response(9, head, b"hello"))
    assert (frame.kind, frame.stream_id) == (Kind.RESPONSE, 9)
    assert frames.decode_response(frame.payload) == (head, b"hello")
    empty = frames.decode(frames.encode_response(9, frames.ResponseHead(status=204)))
    assert frames.decode_response(empty.payload) == (frames.ResponseHead(status=204), b"")
    with pytest.raises(FrameError, match="shorter than its 4-byte head length"):
        frames.decode_response(b"\x00\x00")
    with pytest.raises(FrameError, match="past the end"):
        frames.decode_response(b"\x00\x00\x00\x09{}")
    with pytest.raises(FrameError, match="bad response status 42"):
        frames.decode_response(b'\x00\x00\x00\x0d{"status":42}body')
    hello = frames.decode_control(
        '{"type": "hello", "client_id": "a", "window": 1,'
        ' "max_frame": 1, "max_message": 1, "ping_interval": 1, "idle_timeout": 1}'
    )
    assert isinstance(hello, frames.Hello) and not hello.whole_responses  # an older server


def test_window_close_text_and_control() -> None:
    assert frames.decode_window(frames.decode(frames.encode_window(1, 65536)).payload) == 65536
    with pytest.raises(FrameError):
        frames.decode_window(b"\x00")
    assert frames.decode_close(frames.decode(frames.encode_close(1, 4000, "bye")).payload) == (
        4000,
        "bye",
    )
    assert frames.decode_close(b"") == (1000, "")
    with pytest.raises(FrameError):
        frames.decode_close(b"\x01")
    assert frames.decode(frames.encode_text(1, Kind.ABORT, "gone")).payload == b"gone"
    hello = frames.Hello(
        client_id="c1",
        window=1024,
        max_frame=512,
        max_message=2048,
        ping_interval=5.0,
        idle_timeout=15.0,
    )
    assert frames.decode_control(frames.encode_control(hello)) == hello
    assert frames.decode_control('{"type": "ping"}') == frames.Ping()
    assert frames.decode_control(frames.encode_control(frames.Pong())) == frames.Pong()
    with pytest.raises(FrameError, match="bad control message"):
        frames.decode_control('{"type": "nope"}')


def test_receive_window_batches_grants_and_refuses_overrun() -> None:
    window = ReceiveWindow(window=100, overdraft=50)
    assert frame_cost(b"") == 1
    window.received(60)
    assert window.consumed(40) == 0  # below half the window: no grant yet
    assert window.consumed(20) == 60
    assert window.outstanding == 0
    window.received(100)
    window.received(50)  # the one-frame overdraft
    with pytest.raises(FrameError, match="without credit"):
        window.received(1)


async def test_send_credit_blocks_until_granted_and_wakes_on_close() -> None:
    credit = SendCredit(10)
    await credit.wait()
    credit.spend(15)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            passed = trio.Event()

            async def waiter() -> None:
                await credit.wait()
                passed.set()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not passed.is_set()
            credit.grant(5)  # back to 0: still blocked
            await trio.testing.wait_all_tasks_blocked()
            assert not passed.is_set()
            credit.grant(1)
    assert passed.is_set()
    credit.close()
    with trio.fail_after(2), pytest.raises(StreamGone):
        await credit.wait()


def test_registry_hashes_secrets_migrates_and_flushes(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    secret = registry.add("laptop-1")
    with pytest.raises(ClientExists):
        registry.add("laptop-1")
    for bad in ("Laptop", "-x", "a.b", "", "x" * 64):
        with pytest.raises(InvalidClientId):
            registry.add(bad)
    assert registry.verify("laptop-1", secret)
    assert not registry.verify("laptop-1", secret + "x")
    assert not registry.verify("nobody", secret)
    record = registry.get("laptop-1")
    assert record is not None
    record.requests, record.bytes_in, record.dirty = 3, 100, True
    new = registry.rotate("laptop-1")
    assert registry.verify("laptop-1", new) and not registry.verify("laptop-1", secret)
    registry.close()
    raw = (tmp_path / "tunnel.sqlite3").read_bytes()
    assert new.encode() not in raw and secret.encode() not in raw
    reopened = Registry(tmp_path)  # migrations are idempotent; statistics were flushed
    again = reopened.get("laptop-1")
    assert again is not None and (again.requests, again.bytes_in) == (3, 100)
    assert reopened.verify("laptop-1", new)
    assert reopened.remove("laptop-1") and not reopened.remove("laptop-1")
    reopened.close()
