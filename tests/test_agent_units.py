"""Sans-I/O parts of the tunnel agent: reconnect delays, stream credit and inbox, URLs, CLI."""

from __future__ import annotations

import random

import pytest
from click.testing import CliRunner

from wstund.agent import main
from wstund.agent.backoff import reconnect_delay
from wstund.agent.forward import local_url, request_headers
from wstund.agent.session import AgentConfig
from wstund.agent.streams import AgentStream, StreamAborted
from wstund.tunnel.flow import StreamGone
from wstund.tunnel.frames import Frame, FrameError, Kind, RequestHead


def test_backoff_grows_then_caps_with_jitter() -> None:
    rng = random.Random(7)
    delays = [reconnect_delay(n, 0.5, 30.0, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    assert len(set(delays)) == len(delays)  # jittered


def test_local_url_and_headers() -> None:
    assert local_url("http://127.0.0.1:8080/", "/a%20b/c", "x=1&x=2") == (
        "http://127.0.0.1:8080/a%20b/c?x=1&x=2"
    )
    assert local_url("http://h:1/base", "/p", "") == "http://h:1/base/p"
    headers = [
        ("Host", "pub"),
        ("Connection", "x-foo"),
        ("X-Foo", "1"),
        ("Cookie", "a"),
        ("Cookie", "b"),
    ]
    assert request_headers(headers) == [("Cookie", "a"), ("Cookie", "b")]


def test_connect_url() -> None:
    config = AgentConfig(
        server="https://t.example/", client_id="home", secret="s", target="http://x"
    )
    assert config.connect_url == "wss://t.example/_tunnel/connect?client_id=home"


async def test_stream_credit_overrun_and_abort() -> None:
    head = RequestHead(method="POST", path="/", body=True)
    stream = AgentStream(1, head, window=10, overdraft=4)
    stream.deliver(Frame(Kind.BODY, 1, b"x" * 10))
    stream.deliver(Frame(Kind.BODY, 1, b"y" * 4))  # one frame of overdraft is allowed
    with pytest.raises(FrameError):
        stream.deliver(Frame(Kind.BODY, 1, b"z"))
    assert (await stream.next_frame()).payload == b"x" * 10
    assert stream.consumed(10) == 10  # half a window or more is granted back at once
    stream.abort()
    with pytest.raises(StreamAborted):
        await stream.next_frame()
    with pytest.raises(StreamGone):
        await stream.credit.wait()
    assert stream.cancel_scope.cancel_called


async def test_a_stream_aborted_before_any_frame_takes_none_after() -> None:
    stream = AgentStream(2, RequestHead(method="GET", path="/"), window=10, overdraft=4)
    stream.abort()  # its inbox was never needed, so never opened
    with pytest.raises(FrameError):
        stream.deliver(Frame(Kind.END, 2))
    with pytest.raises(StreamAborted):
        await stream.next_frame()


def test_cli_needs_a_secret(tmp_path: object) -> None:
    result = CliRunner().invoke(
        main, ["--server", "http://127.0.0.1:1", "--client-id", "a", "http://127.0.0.1:2"], env={}
    )
    assert result.exit_code == 2
    assert "secret" in result.output
    bad = CliRunner().invoke(
        main, ["--server", "x", "--client-id", "a", "--secret", "s", "ftp://x"]
    )
    assert bad.exit_code == 2 and "TARGET" in bad.output


def test_wstunctl_tunnel_run_wraps_the_agent() -> None:
    from wstund.admin.cli import main as wstunctl

    shown = CliRunner().invoke(wstunctl, ["tunnel", "run", "--help"])
    assert shown.exit_code == 0
    assert "Usage: wstunctl tunnel run [OPTIONS] TARGET" in shown.output
    assert "--secret-file" in shown.output and "--backoff-max" in shown.output
    usage = CliRunner().invoke(
        wstunctl, ["tunnel", "run", "--server", "http://x", "--client-id", "a", "http://y"], env={}
    )
    assert usage.exit_code == 2


async def test_writer_with_write_many_writes_every_queued_frame_at_once() -> None:
    import trio.testing

    from wstund.tunnel.writer import FrameWriter

    batches: list[list[str | bytes]] = []

    async def one(data: str | bytes) -> None:
        raise AssertionError("a batching writer writes lists")

    async def many(frames: list[str | bytes]) -> None:
        batches.append(frames)

    writer = FrameWriter(one, max_queued=100, max_posted=10, write_many=many)
    await writer.send(b"head")
    await writer.send(b"body")
    await writer.send(b"end")
    assert writer.post("pong")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        assert batches == [["pong", b"head", b"body", b"end"]]  # control first, then in order
        assert writer.queued == 0 and writer.posted == 0
        await writer.send(b"more")
        await trio.testing.wait_all_tasks_blocked()
        assert batches[-1] == [b"more"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("size", [0, 1, 5, 125, 126, 1024, 1025, 65535, 65536, 70001])
def test_client_frames_read_back_as_wsproto_reads_them(size: int) -> None:
    from wsproto.frame_protocol import FrameProtocol, Opcode

    from wstund.agent.link import client_frame

    payload = random.Random(size).randbytes(size)
    text = "é€" * (size // 5) + "x" * (size % 5)
    server = FrameProtocol(client=False, extensions=[])
    first, second = client_frame(payload), client_frame(payload)
    assert first[0][-4:] != second[0][-4:] or size == 0  # a fresh masking key per frame
    for head, body in (first, second, client_frame(text)):
        assert head[1] & 0x80  # masked, as a client must
        server.receive_bytes(head + body)
    frames = list(server.received_frames())
    assert [(f.opcode, f.frame_finished, f.message_finished) for f in frames] == [
        (Opcode.BINARY, True, True),
        (Opcode.BINARY, True, True),
        (Opcode.TEXT, True, True),
    ]
    assert frames[0].payload == frames[1].payload == payload
    assert frames[2].payload == text
