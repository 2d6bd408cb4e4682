"""The agent's own HTTP/1.1 client to the local app: keep-alive reuse, bytes as given, a
connection the app closed while idle, a body cut short. A raw local app on a real socket."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio

from wstund.agent.forward import forward_http
from wstund.agent.local import LocalApp
from wstund.agent.streams import AgentStream
from wstund.tunnel.frames import Kind, RequestHead, decode, decode_response_head

Handler = Callable[[trio.SocketStream, list[bytes]], Awaitable[None]]


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One request head (no body) off ``stream``; b"" at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return b""
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    return head


async def _serve(nursery: trio.Nursery, handler: Handler) -> tuple[int, list[bytes]]:
    """A local app on a free loopback port; returns (port, request heads seen, in order)."""
    seen: list[bytes] = []
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, lambda s: handler(s, seen), 0, host="127.0.0.1")
    )
    return listeners[0].socket.getsockname()[1], seen


async def _forward(
    app: LocalApp, head: RequestHead, calls: list[int] | None = None
) -> list[tuple[Kind, bytes]]:
    """Run one stream through ``forward_http``; the frames it sent (``calls``: how many frames
    each send was handed)."""
    sent: list[tuple[Kind, bytes]] = []

    async def send(*frames: bytes) -> None:
        if calls is not None:
            calls.append(len(frames))
        for data in frames:
            frame = decode(data)
            sent.append((frame.kind, frame.payload))

    stream = AgentStream(1, head, 1024 * 1024, 1024 * 1024)
    await forward_http(send, stream, app, 256 * 1024)
    return sent


async def _keep_alive_app(stream: trio.SocketStream, seen: list[bytes]) -> None:
    buffer = bytearray()
    seen.append(b"<connection>")
    while head := await _read_request(stream, buffer):
        seen.append(head)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nX-Mixed-CASE: Keep\r\nContent-Length: 2\r\n\r\nok"
        )


async def test_requests_reuse_one_connection_and_pass_header_bytes_as_given() -> None:
    async with trio.open_nursery() as nursery:
        port, seen = await _serve(nursery, _keep_alive_app)
        app = LocalApp(f"http://127.0.0.1:{port}/base", connect_timeout=5)
        head = RequestHead(method="GET", path="/a%20b", query="x=1", headers=[("X-Odd-Case", "V")])
        calls: list[int] = []
        with trio.fail_after(10):
            first = await _forward(app, head)
            second = await _forward(app, head, calls)
        await app.aclose()
        nursery.cancel_scope.cancel()
    assert first == second
    assert calls == [3]  # the whole small response handed over at once: one write
    assert [kind for kind, _ in first] == [Kind.HEAD, Kind.BODY, Kind.END]
    response = decode_response_head(first[0][1])
    assert response.status == 200 and ("X-Mixed-CASE", "Keep") in response.headers
    assert first[1][1] == b"ok"
    assert seen.count(b"<connection>") == 1  # the second request took the kept-alive socket
    assert seen[1].startswith(b"GET /base/a%20b?x=1 HTTP/1.1\r\n")
    assert b"\r\nX-Odd-Case: V\r\n" in seen[1]
    assert f"\r\nhost: 127.0.0.1:{port}\r\n".encode() in seen[1]


async def _closing_app(stream: trio.SocketStream, seen: list[bytes]) -> None:
    seen.append(b"<connection>")
    if head := await _read_request(stream, bytearray()):
        seen.append(head)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await stream.aclose()  # no Connection: close; the client learns it from the socket


async def test_a_connection_the_app_closed_while_idle_is_not_reused() -> None:
    async with trio.open_nursery() as nursery:
        port, seen = await _serve(nursery, _closing_app)
        app = LocalApp(f"http://127.0.0.1:{port}", connect_timeout=5)
        head = RequestHead(method="GET", path="/")
        with trio.fail_after(10):
            first = await _forward(app, head)
            await trio.sleep(0.2)  # the app's FIN arrives at the idle connection
            second = await _forward(app, head)
        await app.aclose()
        nursery.cancel_scope.cancel()
    assert [kind for kind, _ in first] == [kind for kind, _ in second]
    assert [kind for kind, _ in second] == [Kind.HEAD, Kind.BODY, Kind.END]
    assert seen.count(b"<connection>") == 2


async def _truncating_app(stream: trio.SocketStream, seen: list[bytes]) -> None:
    if await _read_request(stream, bytearray()):
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
    await stream.aclose()


async def test_a_body_cut_short_by_the_app_is_no_end() -> None:
    sent: list[tuple[Kind, bytes]] = []
    async with trio.open_nursery() as nursery:
        port, _ = await _serve(nursery, _truncating_app)
        app = LocalApp(f"http://127.0.0.1:{port}", connect_timeout=5)

        async def send(*frames: bytes) -> None:
            for data in frames:
                frame = decode(data)
                sent.append((frame.kind, frame.payload))

        stream = AgentStream(1, RequestHead(method="GET", path="/"), 1 << 20, 1 << 20)
        with trio.fail_after(10), pytest.raises(Exception, match="(?i)incomplete|closed"):
            await forward_http(send, stream, app, 256 * 1024)
        await app.aclose()
        nursery.cancel_scope.cancel()
    assert [kind for kind, _ in sent] == [Kind.HEAD, Kind.BODY]
    assert sent[1][1] == b"first"


async def test_an_unreachable_app_is_an_error_frame() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connection refused
        app = LocalApp(f"http://127.0.0.1:{port}", connect_timeout=5)
        with trio.fail_after(10):
            sent = await _forward(app, RequestHead(method="GET", path="/"))
    assert [kind for kind, _ in sent] == [Kind.ERROR]
    assert sent[0][1].startswith(b"local app: ")


async def test_sockio_moves_every_byte_past_a_full_buffer_and_sees_the_end() -> None:
    from wstund.agent import sockio

    left, right = (trio.SocketStream(s) for s in trio.socket.socketpair())
    data = bytes(range(256)) * 16 * 1024  # 4 MiB: far beyond what the socket buffers hold
    received = bytearray()

    async def read_all() -> None:
        while chunk := await sockio.receive_some(right, 65536):
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await sockio.send_all(left, data)
        await sockio.send_all(left, b"")
        await left.aclose()
    assert received == data
    with pytest.raises(OSError):  # a closed socket is an error, not a silent loss
        await sockio.send_all(left, b"late")
    await right.aclose()
