"""A lean HTTP/1.1 keep-alive client for the load generator of bench/tunnel.py.

httpx spends about a millisecond of the generator's CPU on each small request, more than nginx
spends serving it, so the generator would measure itself. This client sends a fixed GET and
reads the answer by hand: the head up to the blank line, then the body by Content-Length, by
chunks, or to the end of the stream; body bytes are counted and dropped. It is a benchmark tool:
GET only, no TLS, no redirects.
"""

from __future__ import annotations

import trio

RECEIVE = 256 * 1024


class LeanHTTP:
    """One keep-alive connection to ``host:port``, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buf = bytearray()

    async def _fill(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(RECEIVE)
        if not data:
            raise ConnectionError("the server closed the connection mid-response")
        self.buf += data

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _skip(self, n: int) -> None:
        """Drop ``n`` body bytes, whatever is buffered first."""
        take = min(n, len(self.buf))
        del self.buf[:take]
        left = n - take
        assert self.stream is not None
        while left:
            data = await self.stream.receive_some(RECEIVE)
            if not data:
                raise ConnectionError(f"the body ended {left} bytes early")
            if len(data) > left:
                self.buf += data[left:]
                left = 0
            else:
                left -= len(data)

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None
        self.buf.clear()

    async def get(self, path: str) -> tuple[int, int]:
        """GET ``path``; returns (status, body bytes)."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n"
        await self.stream.send_all(request.encode())
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self.buf[:end]).lower()
        del self.buf[: end + 4]
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = b"close" in value
        size = 0
        if chunked:
            while chunk := int((await self._line()).split(b";")[0], 16):
                await self._skip(chunk)
                size += chunk
                await self._line()
            while await self._line():  # trailers up to the blank line
                pass
        elif length is not None:
            await self._skip(length)
            size = length
        elif status not in (204, 304):
            size = len(self.buf)
            self.buf.clear()
            while data := await self.stream.receive_some(RECEIVE):
                size += len(data)
            close = True
        if close:
            await self.close()
        return status, size
