"""HTTP/1.1 to the local app with h11 over a pool of keep-alive trio sockets.

The agent pumps bytes: a request head goes out as the server sent it (Host set to the local
one), bodies stream in both directions as h11 events, and a connection whose exchange ended
cleanly goes back to the pool for the next request, with no general-purpose client in between.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import h11
import trio

from . import sockio

READ_SIZE = 256 * 1024  # one receive: large enough that a download is few system calls


class LocalError(Exception):
    """The local app could not be reached or broke HTTP/1.1 before its response head."""


class LocalConnection:
    """One HTTP/1.1 connection to the local app: an h11 client state machine on a trio stream."""

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False

    async def send(self, event: h11.Event) -> None:
        """Write one h11 event (request head, body chunk, end of message)."""
        data = self.h11.send(event)
        if data:
            await sockio.send_all(self.stream, data)

    async def next_event(self) -> h11.Event:
        """The next h11 event from the local app, reading as much as one receive gives."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            await self.receive()

    async def receive(self) -> None:
        """Hand h11 what one receive gives (b"" at the end of the stream)."""
        data = await sockio.receive_some(self.stream, READ_SIZE)
        self.h11.receive_data(data)  # type: ignore[arg-type]  # a bytearray works as well

    def reusable(self) -> bool:
        """True once both sides finished their message on a keep-alive connection."""
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def aclose(self) -> None:
        """Close the socket at once (also under cancellation)."""
        await trio.aclose_forcefully(self.stream)


class LocalApp:
    """Where the local app listens, and its idle keep-alive connections (at most ``max_idle``)."""

    def __init__(self, target: str, connect_timeout: float, max_idle: int = 32) -> None:
        url = urlsplit(target)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        self.host_header = url.netloc.rsplit("@", 1)[-1].encode("idna")
        self.base = url.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[LocalConnection] = []
        self._ssl = ssl.create_default_context() if self.tls else None

    def target(self, path: str, query: str) -> bytes:
        """The request target: the base path + the raw path + the raw query."""
        target = self.base + "/" + path.lstrip("/")
        return (f"{target}?{query}" if query else target).encode("latin-1", "replace")

    async def connect(self) -> LocalConnection:
        """An idle connection still open, else a new one; LocalError if none can be made."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.socket.is_readable():  # readable while idle: closed, or garbage
                conn.reused = True
                return conn
            await conn.aclose()
        try:
            with trio.fail_after(self.connect_timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
                socket = stream.socket  # type: ignore[attr-defined]
                socket.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
                if self._ssl is not None:
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=self.host)
                    await tls.do_handshake()
                    stream = tls
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise LocalError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from None
        return LocalConnection(stream, socket)

    async def release(self, conn: LocalConnection) -> None:
        """Keep ``conn`` for the next request if its exchange ended cleanly, else close it."""
        if conn.reusable() and len(self._idle) < self.max_idle:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            await conn.aclose()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()
