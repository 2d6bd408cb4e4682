"""A socket stream that first gives back bytes already read from it (the request head), so a
server that starts reading after us (Hypercorn) sees the connection from its first byte."""

from __future__ import annotations

import trio


class ReplayStream(trio.abc.HalfCloseableStream):
    """``stream`` with ``prefix`` received first. Like ``trio.SocketStream`` it has ``socket``
    (Hypercorn reads the addresses from it) and no ``do_handshake`` (so it is not taken for
    TLS)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
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
        """Write to the socket."""
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """As the socket's."""
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Shut the socket's write side."""
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket."""
        await self._stream.aclose()
