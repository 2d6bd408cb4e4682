"""The agent's WebSocket to wstund: wsproto on a trio stream, several frames in one write.

A small tunnelled response is three frames (head, body, end); written as one ``send_all`` they
cost one system call and wake wstund once, where a message-at-a-time client pays three of each.
Data frames are framed here (``client_frame``), everything else (handshake, reading, ping,
close) by wsproto.
"""

from __future__ import annotations

import os
import ssl
import struct
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import XorMaskerSimple
from wsproto.utilities import ProtocolError

from .. import closecodes
from . import sockio

RECEIVE_SIZE = 256 * 1024
ABNORMAL = 1006
MAX_REJECT_BODY = 64 * 1024
_OPCODE_TEXT, _OPCODE_BINARY = 0x1, 0x2
_SHORT = struct.Struct("!BB")  # payload up to 125 bytes
_MEDIUM = struct.Struct("!BBH")  # up to 65535
_LONG = struct.Struct("!BBQ")
_SMALL_MASK = 1024  # up to this length one big-int XOR masks fastest, beyond it byte tables do


class Rejected(Exception):
    """wstund answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class HandshakeError(Exception):
    """The upgrade did not complete (a connection closed or broken mid-handshake)."""


class LinkClosed(Exception):
    """The WebSocket is closed; ``code`` and ``reason`` are the close frame's (1006: none)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Link:
    """An open client WebSocket: ``receive`` one message, ``send`` several at once, ``aclose``."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, max_message: int) -> None:
        self._stream = stream
        self._ws = ws
        self._max_message = max_message
        self._send_lock = trio.Lock()
        self.closed: LinkClosed | None = None  # set once the connection is over

    async def send(self, messages: list[str | bytes]) -> None:
        """Write ``messages`` in one write; LinkClosed once the connection is over."""
        if self.closed is not None:
            raise self.closed
        if self._ws.state is not ConnectionState.OPEN:  # wsproto says why it cannot send
            await self._write(b"".join([self._ws.send(_message(m)) for m in messages]))
            return
        parts: list[bytes | bytearray] = []
        for message in messages:
            parts += client_frame(message)
        await self._write(b"".join(parts))

    async def _write(self, data: bytes) -> None:
        try:
            try:
                self._send_lock.acquire_nowait()  # free: no turn of the run loop before the write
            except trio.WouldBlock:
                await self._send_lock.acquire()
            try:
                await sockio.send_all(self._stream, data)
            finally:
                self._send_lock.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._lost(ABNORMAL, "")
            raise self.closed from None  # type: ignore[misc]

    def _lost(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = LinkClosed(code, reason)

    async def receive(self) -> str | bytes:
        """The next whole message; LinkClosed at the close (answered) or a broken socket."""
        parts: list[str] | list[bytes] = []
        size = 0
        while True:
            if self.closed is not None:
                raise self.closed
            for event in self._ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    size += len(event.data)
                    if size > self._max_message:
                        await self.aclose(closecodes.MESSAGE_TOO_BIG, "message too big")
                        raise self.closed  # type: ignore[misc]
                    parts.append(event.data)  # type: ignore[arg-type]
                    if event.message_finished:
                        if isinstance(event, TextMessage):
                            return "".join(parts)  # type: ignore[arg-type]
                        return b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    await self._write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._lost(event.code, event.reason or "")
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self._write(self._ws.send(event.response()))
                        except LinkClosed:
                            pass
                    await trio.aclose_forcefully(self._stream)
                    raise self.closed  # type: ignore[misc]
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self._lost(ABNORMAL, "")
                await trio.aclose_forcefully(self._stream)
                raise self.closed  # type: ignore[misc]
            try:
                self._ws.receive_data(data)  # type: ignore[arg-type]  # a bytearray works too
            except ProtocolError:
                self._lost(ABNORMAL, "")
                await trio.aclose_forcefully(self._stream)
                raise self.closed from None  # type: ignore[misc]

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> None:
        """Send a close frame, wait up to ``timeout`` for the answer, close the socket."""
        if self._ws.state is ConnectionState.OPEN:
            self._lost(code, reason)
            with trio.move_on_after(timeout):
                try:
                    await self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
                    while self._ws.state is not ConnectionState.CLOSED:  # type: ignore[comparison-overlap]
                        data = await self._stream.receive_some(RECEIVE_SIZE)
                        if not data:
                            break
                        self._ws.receive_data(data)  # type: ignore[arg-type]  # a bytearray works too
                        for _event in self._ws.events():
                            pass
                except (LinkClosed, ProtocolError, trio.BrokenResourceError, OSError):
                    pass
        self._lost(code, reason)
        await trio.aclose_forcefully(self._stream)


def _message(data: str | bytes) -> TextMessage | BytesMessage:
    return TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)


def client_frame(message: str | bytes) -> tuple[bytes, bytes | bytearray]:
    """One whole masked client frame of a text or binary message (RFC 6455 5.2), as its head
    (with a fresh random masking key) and its masked payload: the bytes wsproto would make, in a
    third of its time for a small frame (no event dispatch, no copies of the payload); masking a
    large one costs the same either way."""
    if isinstance(message, str):
        opcode, payload = _OPCODE_TEXT, message.encode()
    else:
        opcode, payload = _OPCODE_BINARY, message
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        head = _SHORT.pack(first, 0x80 | size)
    elif size < 65536:
        head = _MEDIUM.pack(first, 0x80 | 126, size)
    else:
        head = _LONG.pack(first, 0x80 | 127, size)
    key = os.urandom(4)  # "derived from a strong source of entropy" (RFC 6455 5.3)
    if size > _SMALL_MASK:
        return head + key, XorMaskerSimple(key).process(payload)  # type: ignore[arg-type]
    if size:
        keys = int.from_bytes((key * (size // 4 + 1))[:size], "big")
        payload = (int.from_bytes(payload, "big") ^ keys).to_bytes(size, "big")
    return head + key, payload


async def connect(
    url: str, headers: list[tuple[bytes, bytes]], max_message: int, timeout: float
) -> Link:
    """Open ``url`` (ws:// or wss://) with ``headers`` on the upgrade, within ``timeout``.

    Rejected on an HTTP answer, HandshakeError on a broken handshake, OSError or
    trio.TooSlowError when wstund cannot be reached.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            sock = stream.socket  # type: ignore[attr-defined]
            sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
            if tls:
                stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
            ws = WSConnection(ConnectionType.CLIENT)
            host_header = parts.netloc.rsplit("@", 1)[-1]
            request = Request(host=host_header, target=target, extra_headers=headers)
            await stream.send_all(ws.send(request))
            return await _handshake(stream, ws, max_message)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


async def _handshake(stream: trio.abc.Stream, ws: WSConnection, max_message: int) -> Link:
    status, body = 0, b""
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError as exc:
            raise HandshakeError(f"connection broken during the handshake: {exc}") from None
        if not data:
            if status:
                raise Rejected(status, body)
            raise HandshakeError("connection closed during the handshake")
        try:
            ws.receive_data(data)  # type: ignore[arg-type]
        except ProtocolError as exc:
            raise HandshakeError(f"bad handshake answer: {exc}") from None
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return Link(stream, ws, max_message)
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    raise Rejected(status, b"")
            elif isinstance(event, RejectData):
                body = (body + event.data)[:MAX_REJECT_BODY]
                if event.body_finished:
                    raise Rejected(status, body)
