"""A lean WebSocket client for the load generator: RFC 6455 framing written out by hand.

trio-websocket spends about 35 µs of the generator's CPU on every received message (wsproto
events, a memory channel, task switches), so one generator core could not keep up with the fast
peers in bench/relay.py. This client parses the server's unmasked frames straight out of the
receive buffer and hands each message to a callback, a whole ``recv`` at a time; what it
sends carries the all-zero masking key (RFC 6455 allows any key; XOR with zero leaves the payload
as it is, so a frame is built without copying the payload through a mask).

It is a benchmark tool, not a general client: no fragmented messages, no extensions, no TLS.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable

import trio

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\0\0\0\0"
Sink = Callable[[bytes, float], None]


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final, masked client frame (with the all-zero key) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + ZERO_MASK + payload


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101."""


class RawStream:
    """A non-blocking stdlib socket driven by ``trio.lowlevel.wait_readable``/``wait_writable``:
    a read that finds data costs one ``recv``, where ``trio.SocketStream.receive_some`` adds
    two scheduling checkpoints; at one wake-up per delivered frame that is most of the
    generator's CPU."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    @classmethod
    async def connect(cls, host: str, port: int) -> RawStream:
        tsock = trio.socket.socket()
        try:
            await tsock.connect((host, port))
        except BaseException:
            tsock.close()
            raise
        return cls(socket.socket(fileno=tsock.detach()))

    async def receive_some(self, size: int) -> bytes:
        while True:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc

    async def aclose(self) -> None:
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
        await trio.lowlevel.checkpoint()


class LeanWebSocket:
    """A client connection: ``send``, ``get_message`` one at a time, or ``read_into(sink)``."""

    def __init__(self, stream: RawStream, rest: bytes) -> None:
        self.stream = stream
        self.buf = bytearray(rest)
        self.closed: str | None = None
        # Text messages answered on sight: Engine.IO's ping "2" wants "3" back.
        self.auto_replies: dict[bytes, bytes] = {}
        self._replies: list[bytes] = []
        self._done = trio.Event()
        # The reader answers pings while another task may be sending a message.
        self._sending = trio.StrictFIFOLock()

    @classmethod
    async def connect(cls, host: str, port: int, path: str, timeout: float = 20.0) -> LeanWebSocket:
        """Open a TCP connection and upgrade it; raises HandshakeError unless the answer is 101."""
        with trio.fail_after(timeout):
            stream = await RawStream.connect(host, port)
            try:
                rest = await _upgrade(stream, host, port, path)
            except BaseException:
                stream.sock.close()  # a refused or timed-out handshake leaves no socket behind
                raise
        return cls(stream, rest)

    async def send(self, text: str) -> None:
        async with self._sending:
            await self.stream.send_all(client_frame(text.encode()))

    def _parse(self, sink: Sink | None, now: float) -> bytes | None:
        """Take complete frames from the buffer: each data message goes to ``sink`` (or, without
        one, the first is returned and the rest stay buffered); control frames are handled."""
        buf = self.buf
        pos, size = 0, len(buf)
        found: bytes | None = None
        try:
            while size - pos >= 2:
                b0, n = buf[pos], buf[pos + 1] & 0x7F
                head = 2
                if n == 126:
                    if size - pos < 4:
                        break
                    n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
                elif n == 127:
                    if size - pos < 10:
                        break
                    n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
                if size - pos < head + n:
                    break
                payload = bytes(buf[pos + head : pos + head + n])
                pos += head + n
                opcode = b0 & 0x0F
                if opcode in (TEXT, BINARY):
                    if not b0 & 0x80:
                        raise ValueError("fragmented messages are not supported by the bench")
                    reply = self.auto_replies.get(payload)
                    if reply is not None:
                        self._replies.append(client_frame(reply))
                    elif sink is not None:
                        sink(payload, now)
                    else:
                        found = payload
                        return found
                elif opcode == PING:
                    self._replies.append(client_frame(payload, PONG))
                elif opcode == CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.closed = f"{code} {payload[2:].decode(errors='replace')}".strip()
                    return None
            return found
        finally:
            del buf[:pos]

    async def _flush_replies(self) -> None:
        if self._replies:
            replies, self._replies = b"".join(self._replies), []
            async with self._sending:
                await self.stream.send_all(replies)

    async def _fill(self) -> bool:
        """Receive more bytes; False at the end of the stream."""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = self.closed or "1006 connection lost"
            return False
        self.buf += data
        return True

    async def get_message(self) -> str:
        """The next data message as text; raises ConnectionError once the connection is closed."""
        while True:
            message = self._parse(None, 0.0)
            await self._flush_replies()
            if message is not None:
                return message.decode()
            if self.closed or not await self._fill():
                raise ConnectionError(f"closed: {self.closed}")

    async def read_into(self, sink: Sink) -> None:
        """Hand every data message to ``sink(payload, arrival time)`` until the connection ends."""
        try:
            while not self.closed:
                self._parse(sink, time.perf_counter())
                await self._flush_replies()
                if self.closed or not await self._fill():
                    break
                now = time.perf_counter()
                self._parse(sink, now)
                await self._flush_replies()
        finally:
            self._done.set()

    async def aclose(self, reading: bool = False, timeout: float = 5.0) -> None:
        """Send a close frame, wait (bounded) for the server's, and close the socket. With a
        ``read_into`` task running (``reading``), that task sees the answer and ends."""
        with trio.move_on_after(timeout):
            try:
                if not self.closed:
                    async with self._sending:
                        await self.stream.send_all(client_frame(b"\x03\xe8", CLOSE))
                if reading:
                    await self._done.wait()
                else:
                    while not self.closed:
                        self._parse(lambda payload, now: None, 0.0)
                        if self.closed or not await self._fill():
                            break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self.stream.aclose()


async def _upgrade(stream: RawStream, host: str, port: int, path: str) -> bytes:
    """Send the upgrade request for ``path`` and read the answer; the bytes after its head."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk or len(data) > 65536:
            raise HandshakeError(f"{path}: connection ended in the handshake: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
        raise HandshakeError(f"{path}: {head.decode('latin-1').splitlines()[0]}")
    return rest
