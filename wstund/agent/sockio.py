"""Sends and receives on the agent's plain TCP sockets that try the system call first.

trio's SocketStream passes through the scheduler after every send and receive; a small tunnelled
request then costs more turns of the run loop than its bytes do. Here a send that the socket takes
at once returns without a turn, and a receive that had to wait returns without a second one. There
is no await between a system call and its result, so a cancellation never lands half-way through a
write. TLS streams (and anything else that is not a plain socket) go through their own methods.
"""

from __future__ import annotations

import os

import trio


def _write_now(fd: int, data: bytes | bytearray | memoryview) -> int:
    """How much of ``data`` the socket took at once (0 when its buffer is full)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


async def send_all(stream: trio.abc.Stream, data: bytes | bytearray) -> None:
    """Write all of ``data``: at once when the socket takes it, else the rest as ``stream`` does.

    Does not pass through the scheduler when the socket took everything: the caller's next
    receive or wait does. OSError (or trio's stream errors) when the connection is gone.
    """
    if isinstance(stream, trio.SocketStream):
        sent = _write_now(stream.socket.fileno(), data)
        if sent == len(data):
            return
        data = memoryview(data)[sent:]  # type: ignore[assignment]
    await stream.send_all(data)


async def receive_some(stream: trio.abc.Stream, max_bytes: int) -> bytes | bytearray:
    """What one receive gives, b"" at the end of the stream (a checkpoint, as trio's is).

    OSError (or trio's stream errors) when the connection is gone.
    """
    if not isinstance(stream, trio.SocketStream):
        return await stream.receive_some(max_bytes)
    socket = stream.socket
    waited = False
    while True:
        try:
            data = os.read(socket.fileno(), max_bytes)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(socket)
            waited = True
            continue
        if not waited:
            await trio.lowlevel.checkpoint()
        return data
