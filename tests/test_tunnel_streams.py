"""Tunnel streams under careless and hostile peers: callers hanging up mid-body never tear the
agent socket, credit-free frames cannot grow the daemon, slow uploads cannot hold every slot."""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import trio
import trio_websocket

from wstund.tunnel import frames

from .conftest import StartDaemon
from .localapp import start_local_app
from .test_tunnel_e2e import CLIENT, MB, open_tunnel, register
from .test_tunnel_server import _fake_agent, _next_frame, _register_as


async def _download_and_hang_up(base: str, rng: random.Random, faults: list[str]) -> None:
    """GET a large body, read part of it and hang up; a cut or an error status is a fault."""
    keep = rng.randrange(64 * 1024, 2 * MB)
    async with httpx.AsyncClient(timeout=20) as http:
        try:
            async with http.stream("GET", f"{base}/bytes?n={8 * MB}") as response:
                if response.status_code != 200:
                    faults.append(f"status {response.status_code}")
                    return
                got = 0
                async for chunk in response.aiter_raw():
                    got += len(chunk)
                    if got >= keep:
                        break  # leaving the block closes the connection mid-body
        except httpx.HTTPError as exc:  # the tunnel cut the body: its agent socket dropped
            faults.append(repr(exc))


async def _upload_and_hang_up(port: int, path: str, rng: random.Random, faults: list[str]) -> None:
    """Start a large upload, send part of it and hang up; a refused upload is a fault."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * MB}\r\n\r\n"
        try:
            await stream.send_all(head.encode())
            for _ in range(rng.randrange(1, 16)):
                await stream.send_all(b"u" * 65536)
        except trio.BrokenResourceError as exc:
            faults.append(f"upload refused: {exc}")


async def test_callers_hanging_up_mid_body_never_drop_the_agent(
    nursery: trio.Nursery, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """An ABORT cancels a stream while its frame is half written: with the writes serialised,
    the agent socket survives hundreds of hang-ups, in both directions, under concurrency.
    The agent runs as its own process, as deployed, so it can outrun the daemon's reads."""
    daemon = await start_daemon(tunnel={"window_size": 4 * MB, "max_requests_per_address": 256})
    local = await start_local_app(nursery)
    secret = await register(daemon)
    log_path = tmp_path / "agent.log"
    command = [
        sys.executable,
        "-m",
        "wstund.agent",
        local.url,
        "--server",
        daemon.url,
        "--client-id",
        CLIENT,
        "--backoff-initial",
        "0.05",
        "--backoff-max",
        "0.2",
    ]
    env = {**os.environ, "WSTUN_TUNNEL_SECRET": secret}
    with log_path.open("wb") as log_file:
        agent = await trio.lowlevel.open_process(command, env=env, stderr=log_file)
    try:
        with trio.fail_after(15):
            while CLIENT not in daemon.hub.tunnels.sessions:
                await trio.sleep(0.02)
        session = daemon.hub.tunnels.sessions[CLIENT]
        base = f"{daemon.url}/_t/{CLIENT}"
        port = int(daemon.url.rsplit(":", 1)[1])
        rng = random.Random(17)
        faults: list[str] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                if rng.random() < 0.75:
                    await _download_and_hang_up(base, rng, faults)
                else:
                    await _upload_and_hang_up(port, f"/_t/{CLIENT}/sink", rng, faults)

        with trio.fail_after(240):
            async with trio.open_nursery() as workers:
                for _ in range(32):
                    workers.start_soon(worker, 10)
            connects = log_path.read_text().count("connected to ")
            assert (connects, faults[:3]) == (1, []), "the agent socket dropped"
            async with httpx.AsyncClient(timeout=20) as http:  # the tunnel still works
                reply = await http.get(f"{base}/bytes?n={MB}")
            assert reply.status_code == 200 and len(reply.content) == MB
            while daemon.hub.tunnels.sessions[CLIENT].streams:
                await trio.sleep(0.01)
        # Checked while the agent runs: once it is stopped, the daemon may see its socket
        # close before the process's exit is reported here.
        assert daemon.hub.tunnels.sessions[CLIENT] is session and not session.lost
        assert len(session.exchanges) == 0 and session.exchanges.held == 0
    finally:
        agent.terminate()
        with trio.move_on_after(5):
            await agent.wait()
    assert log_path.read_text().count("connected to ") == 1


async def _stall_then_flood(
    agent: trio_websocket.WebSocketConnection, window: int, status: int
) -> int:
    """Answer the next request with ``status``, send body within credit until the daemon stops
    granting it (its caller reads nothing), then 300 MiB of credit-free frames; return how much
    this process grew meanwhile."""
    sid = (await _next_frame(agent)).stream_id
    await agent.send_message(frames.encode_response_head(sid, frames.ResponseHead(status=status)))
    credit = window
    while True:  # honour the credit until the daemon stops granting it
        while credit > 0:
            await agent.send_message(frames.encode(frames.Kind.BODY, sid, b"x" * 4096))
            credit -= 4096
        with trio.move_on_after(1.0):
            frame = await _next_frame(agent)
            if frame.kind == frames.Kind.WINDOW:
                credit += frames.decode_window(frame.payload)
            continue
        break  # stalled: the caller reads nothing
    process = psutil.Process()
    before = process.memory_info().rss
    big = b"e" * MB
    kinds = (frames.Kind.ERROR, frames.Kind.HEAD, frames.Kind.ABORT)
    for n in range(300):
        await agent.send_message(frames.encode(kinds[n % 3], sid, big))
    # A ping round trip: the daemon has read every frame sent before it.
    await agent.send_message(frames.encode_control(frames.Ping()))
    while True:
        message = await agent.get_message()
        if isinstance(message, str) and isinstance(frames.decode_control(message), frames.Pong):
            return process.memory_info().rss - before


@pytest.mark.parametrize("websocket", [False, True])
async def test_credit_free_frames_on_a_stalled_stream_are_bounded(
    start_daemon: StartDaemon, websocket: bool
) -> None:
    """HEAD, ERROR and ABORT cost no credit: an agent sending 1 MiB of them, over and over, on
    a stream (HTTP or tunnelled WebSocket) whose caller stopped reading must not grow the
    daemon."""
    window = 65536
    daemon = await start_daemon(
        tunnel={"window_size": window, "max_frame_size": 16384},
        relay={"max_message_size": 2 * MB},
    )
    secret = await _register_as(daemon, "flood", {})
    growth: list[int] = []
    with trio.fail_after(60):
        agent = await _fake_agent(daemon, "flood", secret)

        async def flood() -> None:
            growth.append(await _stall_then_flood(agent, window, 101 if websocket else 200))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            if websocket:
                url = daemon.ws_url("/_t/flood/ws")
                async with trio_websocket.open_websocket_url(url):  # reads nothing
                    while not growth:
                        await trio.sleep(0.05)
            else:
                tiny = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
                transport = httpx.AsyncHTTPTransport(socket_options=tiny)
                async with httpx.AsyncClient(base_url=daemon.url, transport=transport) as client:
                    async with client.stream("GET", "/_t/flood/big") as response:
                        assert response.status_code == 200
                        while not growth:
                            await trio.sleep(0.05)
        session = daemon.hub.tunnels.sessions["flood"]
        assert growth[0] < 64 * MB, f"the daemon grew by {growth[0] // MB} MiB"
        assert not session.lost  # only the stream paid for it
        while session.streams:
            await trio.sleep(0.01)
    assert session.exchanges.held == 0


async def _read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (x.partition(": ") for x in lines) if k.lower() == "content-length"
    )
    while len(body) < length:
        body += await stream.receive_some(65536)
    return int(lines[0].split()[1]), body


async def _slow_upload(port: int, path: str) -> trio.SocketStream:
    """A caller that announces a body and sends one byte of it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nu"
    await stream.send_all(head.encode())
    return stream


async def test_slow_uploads_from_one_address_leave_the_client_usable(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """Slow anonymous uploads from one address hold at most tunnel.max_requests_per_address
    of the client's stream slots; past it they get 429, and other callers are still served."""
    tunnel = await open_tunnel(
        nursery,
        start_daemon,
        tunnel={"max_streams_per_client": 6, "max_requests_per_address": 4, "body_timeout": 60},
    )
    port = int(tunnel.daemon.url.rsplit(":", 1)[1])
    counts = tunnel.daemon.hub.tunnels.requests_by_address
    held: list[trio.SocketStream] = []
    with trio.fail_after(20):
        for n in range(1, 5):
            held.append(await _slow_upload(port, f"/_t/{CLIENT}/sink"))
            while counts.get("127.0.0.1", 0) < n:
                await trio.sleep(0.01)
        refused = await _slow_upload(port, f"/_t/{CLIENT}/sink")
        async with refused:
            status, body = await _read_response(refused)
        assert status == 429 and json.loads(body)["error"] == "too_many_requests"
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=other, timeout=10) as http:
            reply = await http.get(f"{tunnel.base}/bytes?n=1000")
        assert reply.status_code == 200 and len(reply.content) == 1000
        for stream in held:
            await stream.aclose()
        while counts:
            await trio.sleep(0.01)


async def test_an_idle_request_body_times_out_with_408(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    """A caller that stops sending its body loses the request after tunnel.body_timeout: 408,
    and the agent's stream (and the local request) is given up."""
    tunnel = await open_tunnel(nursery, start_daemon, tunnel={"body_timeout": 0.5})
    port = int(tunnel.daemon.url.rsplit(":", 1)[1])
    session = tunnel.daemon.hub.tunnels.sessions[CLIENT]
    with trio.fail_after(20):
        stream = await _slow_upload(port, f"/_t/{CLIENT}/sink")
        async with stream:
            status, body = await _read_response(stream)
        assert status == 408 and json.loads(body)["error"] == "body_timeout"
        while session.streams or tunnel.agent.streams:
            await trio.sleep(0.01)
    assert tunnel.daemon.hub.tunnels.requests_by_address == {}
