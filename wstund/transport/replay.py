"""A socket stream that first gives back bytes already read from it (the request head), so a
server that starts reading after us (Hypercorn) sees the connection from its first byte.

Its writes go straight to the non-blocking socket and wait only when the socket is full: a
write the socket takes at once costs no trip through trio's scheduler (``SocketStream.send_all``
yields once per call even then). Hypercorn writes under its own lock, whose acquire is a
checkpoint, so its writing task still yields on every write.

An app that needs to know when its caller hangs up, and has no request body to read, registers a
callback with ``scope["state"][ON_HANGUP]`` (``hangup_watch(scope)`` fetches it) instead of
keeping a task in ``receive()`` for ``http.disconnect``: the read that finds the end of the
stream (Hypercorn's own read loop, the one that makes ``http.disconnect``) calls it.

An app that knows a response's body follows its head at once (a tunnelled response already
whole) calls ``scope["state"][HOLD_NEXT_WRITE]()`` (``write_hold(scope)`` fetches it) before
sending the head: the head then goes out with the body, in one system call and one TCP segment.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import trio

# The keys of a connection's ``scope["state"]`` that hold its ReplayStream's hold_next_write
# and on_hangup.
HOLD_NEXT_WRITE = "wstund.hold_next_write"
ON_HANGUP = "wstund.on_hangup"
Watch = Callable[[Callable[[], None]], Callable[[], None]]


def no_hold() -> None:
    """A ``hold_next_write`` that holds nothing (where there is no such connection)."""


def write_hold(scope: Mapping[str, Any]) -> Callable[[], None]:
    """The connection's ``hold_next_write`` (a no-op where there is none)."""
    hold: Callable[[], None] = scope.get("state", {}).get(HOLD_NEXT_WRITE, no_hold)
    return hold


def hangup_watch(scope: Mapping[str, Any]) -> Watch | None:
    """The connection's ``on_hangup``, or None where there is none (then read ``receive()``
    for ``http.disconnect``)."""
    watch: Watch | None = scope.get("state", {}).get(ON_HANGUP)
    return watch


class ReplayStream(trio.abc.HalfCloseableStream):
    """``stream`` with ``prefix`` received first. Like ``trio.SocketStream`` it has ``socket``
    (Hypercorn reads the addresses from it) and no ``do_handshake`` (so it is not taken for
    TLS)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes, sock: socket.socket) -> None:
        self._stream = stream
        self._prefix = prefix
        self._sock = sock  # the stdlib socket ``stream`` wraps, for writes that need not wait
        self.socket = stream.socket
        self._hold = False  # keep the next write for the one after it
        self._held = b""
        self._hung_up = False  # a read found the end of the stream
        self._on_hangup: Callable[[], None] | None = None

    def on_hangup(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once, when a read finds the caller gone (at once if it is gone
        already); returns the function that stops watching. One watcher at a time: HTTP/1.1
        has one request in flight per connection."""
        if self._hung_up:
            callback()
        else:
            self._on_hangup = callback

        def stop() -> None:
            if self._on_hangup is callback:
                self._on_hangup = None

        return stop

    def _hangup(self) -> None:
        self._hung_up = True
        callback, self._on_hangup = self._on_hangup, None
        if callback is not None:
            callback()

    def hold_next_write(self) -> None:
        """Keep the next non-empty write and send it with the write after it (which comes at
        once: a response's body, or the empty end of a body-less one)."""
        self._hold = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The replayed bytes first, then the socket's."""
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        try:
            data = bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._hangup()
            raise
        if not data:
            self._hangup()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` to the socket, waiting only while it is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._hold and data:
            self._hold, self._held = False, bytes(data)
            return
        if self._held:
            data, self._held = self._held + data, b""
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
        """Write what is held, then shut the socket's write side."""
        if self._held:
            await self.send_all(b"")
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket."""
        await self._stream.aclose()
