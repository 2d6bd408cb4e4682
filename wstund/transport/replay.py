"""A socket stream that first gives back bytes already read from it (the request head), so a
server that starts reading after us (Hypercorn) sees the connection from its first byte.

Its writes go straight to the non-blocking socket and wait only when the socket is full: a
write the socket takes at once costs no trip through trio's scheduler (``SocketStream.send_all``
yields once per call even then). Hypercorn writes under its own lock, whose acquire is a
checkpoint, so its writing task still yields on every write.
"""

from __future__ import annotations

import socket

import trio


class ReplayStream(trio.abc.HalfCloseableStream):
    """``stream`` with ``prefix`` received first. Like ``trio.SocketStream`` it has ``socket``
    (Hypercorn reads the addresses from it) and no ``do_handshake`` (so it is not taken for
    TLS)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes, sock: socket.socket) -> None:
        self._stream = stream
        self._prefix = prefix
        self._sock = sock  # the stdlib socket ``stream`` wraps, for writes that need not wait
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The replayed bytes first, then the socket's."""
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` to the socket, waiting only while it is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        with memoryview(data) as view:
            while view:
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the socket was already closed")
                try:
                    sent = self._sock.send(view)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._sock)
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket send failed: {exc}") from exc
                view = view[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        """As the socket's."""
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Shut the socket's write side."""
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket."""
        await self._stream.aclose()
