"""One WebSocket on the lean lane: wsproto on a non-blocking socket, driven by one task.

The connection's own task reads (``receive``) and answers pings and closes. Writes come from
wherever a frame is routed: ``write_nowait`` puts bytes straight on the socket when nothing
waits before them and returns at once; only when the socket cannot take them does a writer
task (``write``) wait for it. A frame partly taken by the socket is finished before any other
byte, so frames are never torn.
"""

from __future__ import annotations

import socket
from typing import cast

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from .. import closecodes
from .frames import PING, Frame, FrameCache, encode_frame
from .handshake import accept_response, reject_response, upgrade_key
from .head import Head

RECEIVE_SIZE = 64 * 1024
WHOLE = 1  # write_nowait: the socket took the frame
OWED = 2  # write_nowait: it took part; the rest waits for write()
ABNORMAL = 1006
_PING = encode_frame(PING, b"")


class HandshakeFailed(Exception):
    """The upgrade request could not be read as a WebSocket handshake."""


class LaneSocket:
    """A server WebSocket on ``sock`` (non-blocking), set up from a request head already read."""

    def __init__(
        self,
        sock: socket.socket,
        tsock: trio.socket.SocketType,
        head: Head,
        cache: FrameCache,
        *,
        max_message_size: int,
    ) -> None:
        self._sock = sock  # the stdlib socket: writes that must not wait
        self._trio = tsock  # the same socket wrapped by trio, for waiting
        self._cache = cache
        self._ws = Connection(ConnectionType.SERVER)  # replaced at accept, with extensions
        self._max_message_size = max_message_size
        self._owed = b""  # the rest of a frame the socket took only part of
        self._lock: trio.Lock | None = None  # serialises the tasks that wait to write
        self._writers = 0  # tasks in (or waiting for) a write that may wait
        self.closed = False  # the socket is gone (closed by us, or broken)
        self.accepted = False
        self.close_code: int | None = None  # the first close code seen: the peer's or ours
        self.last_heard = self.last_ping = trio.current_time()
        # (ping interval, idle timeout) of this socket, overriding the lane's (0 = off)
        self.keepalive: tuple[float, float] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._head: Head | None = head  # until accepted: an open socket keeps no head
        key = upgrade_key(head)
        if key is None:
            raise HandshakeFailed("not a valid WebSocket upgrade request")
        self._key = key

    @property
    def socket(self) -> socket.socket:
        """The connection's socket (for its addresses)."""
        return self._sock

    @property
    def request(self) -> Head | None:
        """The upgrade request, until the socket is accepted."""
        return self._head

    @property
    def open(self) -> bool:
        """Accepted, and no close frame sent or received: messages may still be sent."""
        return self.accepted and not self.closed and self._ws.state is ConnectionState.OPEN

    # -- handshake ------------------------------------------------------------------------

    async def accept(
        self, *, permessage_deflate: bool, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Accept the upgrade, with ``headers`` added to the 101; negotiate permessage-deflate
        only if allowed and offered."""
        supported: list[Extension] = [PerMessageDeflate()] if permessage_deflate else []
        assert self._head is not None, "accepted twice"
        head, self._head = self._head, None
        data, extensions = accept_response(head, self._key, supported, headers or [])
        self._ws = Connection(ConnectionType.SERVER, extensions)
        if not extensions:
            self.encode = self._cache.encode  # type: ignore[method-assign]
        self.accepted = True
        if head.rest:  # frames sent right behind the request
            self.bytes_in += len(head.rest)
            self._ws.receive_data(head.rest)
        await self._write_raw(data)

    async def reject(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the upgrade with an HTTP error instead, then close."""
        self.close_code = status
        await self._write_raw(reject_response(status, headers, body))

    # -- writing --------------------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        """The wire bytes of a message for this connection, compressed (permessage-deflate).

        Without compression ``accept`` replaces this with the shared cache's ``encode``: the
        bytes every recipient of a broadcast shares.
        """
        message = TextMessage(frame) if isinstance(frame, str) else BytesMessage(frame)
        return self._ws.send(message)

    @property
    def owes(self) -> bool:
        """Part of a frame waits to be written: a writer must ``write`` before anything else."""
        return bool(self._owed)

    def write_nowait(self, item: Frame) -> int:
        """Write ``item`` (from ``encode``) if nothing waits before it: WHOLE if the socket took
        it, OWED if it took part (the rest waits for ``write``), 0 if nothing was written."""
        if self._owed or self._writers:
            return 0
        if self.closed:
            return WHOLE  # a closed socket swallows what is sent, as Hypercorn's did
        data: bytes = item  # type: ignore[assignment]  # encode() gives bytes
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._broken()
            return WHOLE
        size = len(data)
        self.bytes_out += size
        if sent < size:
            self._owed = data[sent:]
            return OWED
        return WHOLE

    async def write(self, items: list[Frame]) -> None:
        """Write what is owed, then ``items`` (from ``encode``), in one write; waits for the
        socket."""
        wire = cast("list[bytes]", items)
        if self._lock is None:
            self._lock = trio.Lock()
        self._writers += 1
        try:
            async with self._lock:
                data = b"".join([self._owed, *wire]) if len(wire) != 1 or self._owed else wire[0]
                self._owed = b""
                for item in wire:
                    self.bytes_out += len(item)
                await self._send_all(data)
        finally:
            self._writers -= 1

    async def _write_raw(self, data: bytes) -> None:
        if self._lock is None:
            self._lock = trio.Lock()
        self._writers += 1
        try:
            async with self._lock:
                data, self._owed = self._owed + data, b""
                await self._send_all(data)
        finally:
            self._writers -= 1

    async def _send_all(self, data: bytes) -> None:
        """Write ``data`` whole. Cancelled part-way, the rest is owed to the next write, so a
        frame is never torn (a pong cut short would corrupt the close frame after it)."""
        view = memoryview(data)
        await trio.lowlevel.checkpoint()
        try:
            while view and not self.closed:
                try:
                    sent = self._sock.send(view)
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_writable(self._sock)
                    except trio.ClosedResourceError:  # aborted meanwhile (idle timeout)
                        return
                    continue
                except OSError:
                    self._broken()
                    return
                view = view[sent:]
        except trio.Cancelled:
            if 0 < len(view) < len(data):
                self._owed = bytes(view)
            raise

    def ping_nowait(self) -> None:
        """Send a ping unless the socket is busy (then the peer is being written to anyway)."""
        if self.accepted and self._ws.state is ConnectionState.OPEN:
            self.write_nowait(_PING)

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (after what is owed) and stop writing."""
        if self.close_code is None:
            self.close_code = code
        if not self.accepted or self._ws.state is not ConnectionState.OPEN:
            return
        await self._write_raw(self._ws.send(CloseConnection(code=code, reason=reason)))
        if not self.closed:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # -- reading --------------------------------------------------------------------------

    async def receive(self) -> Frame | None:
        """The next message; None once the connection is closed (its code in ``close_code``)."""
        parts: list[str] | list[bytes] = []
        size = 0
        while True:
            for event in self._ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    size += len(event.data)
                    if size > self._max_message_size:
                        await self.close(closecodes.MESSAGE_TOO_BIG, "message too big")
                        return None
                    parts.append(event.data)  # type: ignore[arg-type]
                    if event.message_finished:
                        return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    await self._write_raw(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.close_code is None:
                        self.close_code = event.code
                    if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                        await self._write_raw(self._ws.send(event.response()))
                    return None
            if self.closed:
                return None
            try:
                data = await self._trio.recv(RECEIVE_SIZE)
            except (OSError, trio.ClosedResourceError):
                data = b""
            if not data:
                if self.close_code is None:
                    self.close_code = ABNORMAL
                return None
            self.last_heard = self.last_ping = trio.current_time()
            self.bytes_in += len(data)
            try:
                self._ws.receive_data(data)
            except LocalProtocolError:  # data after the close: ignored
                return None

    async def drain(self, timeout: float) -> None:
        """After our close frame: read (and drop) until the peer's close frame or end of
        stream, for up to ``timeout``.

        Closing with unread bytes would send a reset, which can destroy the close frame
        still on its way to the peer.
        """
        with trio.move_on_after(timeout):
            while not self.closed and self._ws.state is not ConnectionState.CLOSED:
                try:
                    data = await self._trio.recv(RECEIVE_SIZE)
                except (OSError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                try:
                    self._ws.receive_data(data)
                    for _event in self._ws.events():
                        pass  # wsproto moves to CLOSED on the peer's close frame
                except LocalProtocolError:
                    return

    def _broken(self) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        self.abort()

    def abort(self) -> None:
        """Close the socket now, waking the reading task (used for silent peers)."""
        if not self.closed:
            self.closed = True
            self._trio.close()
