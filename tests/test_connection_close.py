"""Every HTTP connection closes when HTTP says so: ``Connection: close``, HTTP/1.0, after a 413.

Raw sockets, so nothing between the test and the daemon keeps or drops a connection on its own.
``trio.fail_after`` only guards against a hang; no timing is asserted.
"""

from __future__ import annotations

import trio

from .conftest import RunningDaemon, StartDaemon
from .test_tunnel_e2e import Tunnel, open_tunnel

HANG_GUARD = 10.0


async def exchange(daemon: RunningDaemon, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; read until the daemon closes it (EOF or reset)."""
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    received = bytearray()
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(HANG_GUARD):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:  # reset: the daemon closed with unread input
                    break
                if not data:
                    break
                received += data
    return bytes(received)


async def test_http_10_get_is_closed_after_the_answer(wstund: RunningDaemon) -> None:
    answer = await exchange(wstund, b"GET /libwstun.js HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"WSTun" in answer


async def test_connection_close_is_honoured(wstund: RunningDaemon) -> None:
    answer = await exchange(
        wstund, b"GET /libwstun.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer.lower()


async def test_an_error_answer_closes_too(wstund: RunningDaemon) -> None:
    answer = await exchange(
        wstund, b"GET /no/such/page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 404 ")


async def test_keep_alive_request_after_a_413_sees_the_end(wstund: RunningDaemon) -> None:
    too_big = wstund.hub.config.relay.max_message_size + 1
    request = (
        b"POST /_api/marketplace/url HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Admin-Token: %s\r\nContent-Length: %d\r\n\r\n" % (wstund.admin_token.encode(), too_big)
    )
    stream = await trio.open_tcp_stream("127.0.0.1", wstund.port)
    received = bytearray()
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(HANG_GUARD):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 413 ")
            # The caller goes on as a keep-alive client would: another request on the same
            # connection. The daemon must end the connection rather than leave it wedged.
            try:
                await stream.send_all(b"GET /libwstun.js HTTP/1.1\r\nHost: x\r\n\r\n")
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass


async def test_streamed_tunnel_body_to_an_http_10_caller_ends(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    tunnel: Tunnel = await open_tunnel(nursery, start_daemon)
    size = 300_000
    answer = await exchange(tunnel.daemon, b"GET /_t/home/bytes?n=%d HTTP/1.0\r\n\r\n" % size)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == size


async def test_keep_alive_still_serves_several_requests(wstund: RunningDaemon) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await exchange(
        wstund, request + request + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert answer.count(b"HTTP/1.1 200 ") == 3


async def _answer(stream: trio.SocketStream) -> bytes:
    """One whole response on a kept-alive connection (headers up to a Content-Length body)."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        data = await stream.receive_some(65536)
        assert data, "the daemon closed the connection before answering"
        received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head


async def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(server={"keep_alive_timeout": 0.5})
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        with trio.fail_after(HANG_GUARD):
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await _answer(stream)).startswith(b"HTTP/1.1 200 ")
            try:  # nothing more is sent: the daemon ends the connection on its own
                assert await stream.receive_some(65536) == b""
            except trio.BrokenResourceError:
                pass


async def test_each_request_restarts_the_keep_alive_timer(start_daemon: StartDaemon) -> None:
    # Five requests 0.3 s apart outlive one 0.5 s timeout: each request stops the running timer
    # and the answer starts a fresh one, so no earlier timer closes the connection.
    daemon = await start_daemon(server={"keep_alive_timeout": 0.5})
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        with trio.fail_after(HANG_GUARD):
            for _ in range(5):
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await _answer(stream)).startswith(b"HTTP/1.1 200 ")
                await trio.sleep(0.3)


async def test_a_tunnelled_head_request_is_answered_and_the_connection_kept(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    # A HEAD's answer has no body to carry a held-back head out: the empty end of it must.
    tunnel = await open_tunnel(nursery, start_daemon)
    stream = await trio.open_tcp_stream("127.0.0.1", tunnel.daemon.port)
    async with stream:
        with trio.fail_after(HANG_GUARD):
            await stream.send_all(b"HEAD /_t/home/echo HTTP/1.1\r\nHost: x\r\n\r\n")
            received = bytearray()
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 201 ") and b"x-method: HEAD" in received
            assert received.endswith(b"\r\n\r\n")  # no body
            await stream.send_all(
                b"GET /_t/home/bytes?n=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            received = bytearray()
            while data := await stream.receive_some(65536):
                received += data
            assert received.startswith(b"HTTP/1.1 200 ")
