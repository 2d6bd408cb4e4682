"""The accept loop of the public listeners: admission, the request head, then a lane.

Replaces Hypercorn's ``worker_serve`` for the public sockets (it serves each socket Hypercorn's
way, with ``TCPServer``, once we have decided it is not ours), so that every socket is counted
before any work is done for it, and refused for the price of a ``close()`` at the limits.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr

from ..web.access import log_websocket
from .admission import Admission, RateLimitedLine, Verdict
from .frames import FrameCache
from .head import Head, head_complete, parse_head
from .idle import QuickSingleTask
from .replay import HOLD_NEXT_WRITE, ON_HANGUP, ReplayStream
from .websocket import HandshakeFailed, LaneSocket

log = logging.getLogger("wstund.transport")

# accept() failing for want of descriptors or memory: pause, never crash (trio's own list).
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_PAUSE = 0.1  # seconds to wait before accepting again after such a failure
REFUSAL_LOG_PERIOD = 10.0  # at most one refusal line per this many seconds
DRAIN_TIMEOUT = 2.0  # seconds to read a peer's close reply after our close frame

LaneHandler = Callable[[LaneSocket, Head, str], Awaitable[None]]
LaneRefusal = Callable[[LaneSocket, str], Awaitable[None]]


class Lanes:
    """Which upgrades the lean lane serves: ``route(head)`` gives the handler, or None for
    Hypercorn; ``refuse`` tells a lane client that the server is full."""

    def __init__(
        self,
        route: Callable[[Head], LaneHandler | None],
        refuse: LaneRefusal,
        settings: Callable[[], LaneSettings],
    ) -> None:
        self.route = route
        self.refuse = refuse
        self.settings = settings


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneSettings:
    """Limits read per connection (a reload applies to new connections)."""

    max_connections: int
    max_connections_per_ip: int
    head_timeout: float
    max_message_size: int
    ping_interval: float
    idle_timeout: float
    send_buffer: int
    # Peers exempt from the per-address cap: trusted reverse proxies carry many clients, whose
    # own addresses the relay and tunnel limits count.
    uncapped: Callable[[str], bool] = lambda address: False
    # The effective client of an upgrade from a peer, given its headers (a trusted proxy's
    # X-Forwarded-For): what the lane's limits and access lines count.
    client: Callable[[str, list[tuple[bytes, bytes]]], str] = lambda peer, headers: peer


def _address(family: int, peer: Any) -> str | None:
    """The peer's IP address; None on a unix socket (no per-address cap there)."""
    if family in (socket.AF_INET, socket.AF_INET6):
        return str(peer[0])
    return None


def refusal_response(reason: str) -> bytes:
    """An HTTP 503 with the JSON error body every other refusal has, closing the connection."""
    body = json.dumps({"error": "too_many_connections", "message": reason}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


class Transport:
    """Serves the public listening sockets: the lean lane for ``lanes``, Hypercorn for the rest."""

    def __init__(
        self,
        app: Any,
        hyper: HypercornConfig,
        lanes: Lanes,
        on_refused: Callable[[], object] = lambda: None,
    ) -> None:
        self.app = app
        self.hyper = hyper
        self.lanes = lanes
        self.on_refused = on_refused  # called for each socket refused at the caps
        self.admission = Admission()
        self.cache = FrameCache()
        self.refused = 0
        self.lane_sockets: set[LaneSocket] = set()
        self._refusal_line = RateLimitedLine(REFUSAL_LOG_PERIOD)
        self._capacity_line = RateLimitedLine(REFUSAL_LOG_PERIOD)
        self._context = WorkerContext(None)
        self._lifespan_state: dict[str, Any] = {}

    async def serve(
        self,
        sockets: Sockets,
        shutdown: trio.Event,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until ``shutdown``; then stop listening and give open connections
        ``graceful_timeout``. Runs the app's lifespan around it, as Hypercorn's worker does."""
        self.hyper.set_statsd_logger_class(StatsdLogger)
        lifespan = Lifespan(self.app, self.hyper, self._lifespan_state)
        listeners = [*sockets.insecure_sockets]
        if sockets.secure_sockets or sockets.quic_sockets:
            raise ValueError("TLS binds are not supported: terminate TLS in a reverse proxy")
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as sweeper:
                sweeper.start_soon(self._keep_alive)
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as accepting:
                        for sock in listeners:
                            sock.setblocking(False)
                            accepting.start_soon(self._accept, sock, connections)
                        binds = [repr_socket_addr(s.family, s.getsockname()) for s in listeners]
                        task_status.started([f"http://{bind}" for bind in binds])
                        await shutdown.wait()
                        accepting.cancel_scope.cancel()
                    for sock in listeners:
                        sock.close()
                    await self._context.terminated.set()  # Hypercorn's idle keep-alives close
                    connections.cancel_scope.deadline = (
                        trio.current_time() + self.hyper.graceful_timeout
                    )
                sweeper.cancel_scope.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _accept(self, listener: socket.socket, connections: trio.Nursery) -> None:
        """Accept forever; count each socket, refuse past the caps, serve the rest."""
        while True:
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                held = self._capacity_line.due(time.monotonic())
                if held is not None:
                    log.warning(
                        "accept failed: %s; pausing %.1fs (%d more since the last line)",
                        exc.strerror,
                        ACCEPT_PAUSE,
                        held,
                    )
                await trio.sleep(ACCEPT_PAUSE)
                continue
            address = _address(sock.family, peer)
            settings = self.lanes.settings()
            verdict, reason = self.admission.admit(
                address or "unix",
                settings.max_connections,
                None
                if address is None or settings.uncapped(address)
                else settings.max_connections_per_ip,
            )
            if verdict is not Verdict.SERVE:
                self._note_refusal(reason)
            if verdict is Verdict.DROP:
                sock.close()
            else:
                connections.start_soon(self._connection, sock, address or "unix", verdict, reason)
            await trio.lowlevel.checkpoint()

    def _note_refusal(self, reason: str) -> None:
        self.refused += 1
        self.on_refused()
        held = self._refusal_line.due(time.monotonic())
        if held is not None:
            log.warning("connection refused: %s (%d more since the last line)", reason, held)

    async def _connection(
        self, sock: socket.socket, address: str, verdict: Verdict, reason: str
    ) -> None:
        """Serve one accepted socket; it is released from the counts when this ends."""
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.admission.release(address, verdict)

        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tsock = trio.socket.from_stdlib_socket(sock)
        try:
            raw = await self._read_head(tsock)
            if not raw:
                return
            head = parse_head(raw)
            handler = self.lanes.route(head) if head is not None else None
            if verdict is Verdict.REFUSE:
                await self._refuse(sock, tsock, raw, head if handler else None, reason)
            elif handler is not None and head is not None:
                ws = self._lane_socket(sock, tsock, head)
                if ws is not None:
                    serving = self._serve_lane(ws, head, handler, address, release)
                    del raw, head  # an open socket keeps no request head
                    await serving
                else:
                    await self._serve_hypercorn(sock, tsock, raw)  # Hypercorn answers a bad upgrade
            else:
                await self._serve_hypercorn(sock, tsock, raw)
        except* Exception as group:  # one connection's failure ends that connection only
            # (Hypercorn's own worker lets some escape into its listener's nursery, ending it.)
            error = group.exceptions[0] if len(group.exceptions) == 1 else group
            log.error("connection from %s dropped after an error", address, exc_info=error)
        finally:
            release()
            tsock.close()

    async def _read_head(self, tsock: trio.socket.SocketType) -> bytes:
        """The bytes of the first request head, or b"" if it did not come in time."""
        data = b""
        with trio.move_on_after(self.lanes.settings().head_timeout):
            while not head_complete(data):
                try:
                    chunk = await tsock.recv(65536)
                except OSError:
                    return b""
                if not chunk:
                    return b""
                data += chunk
            return data
        return b""

    async def _refuse(
        self,
        sock: socket.socket,
        tsock: trio.socket.SocketType,
        raw: bytes,
        head: Head | None,
        reason: str,
    ) -> None:
        """Tell a client past the caps why it is refused: the lane's way (``head`` given), or
        an HTTP 503."""
        with trio.move_on_after(self.lanes.settings().head_timeout):
            if head is not None:
                try:
                    ws = LaneSocket(sock, tsock, head, self.cache, max_message_size=1024)
                except HandshakeFailed:
                    pass
                else:
                    await self.lanes.refuse(ws, reason)
                    await ws.drain(DRAIN_TIMEOUT)
                    return
            await tsock.send(refusal_response(reason))

    def _lane_socket(
        self, sock: socket.socket, tsock: trio.socket.SocketType, head: Head
    ) -> LaneSocket | None:
        """A lean WebSocket for ``head``; None when it is no valid upgrade request."""
        settings = self.lanes.settings()
        try:
            ws = LaneSocket(
                sock, tsock, head, self.cache, max_message_size=settings.max_message_size
            )
        except HandshakeFailed:
            return None
        if settings.send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer)
        return ws

    async def _serve_lane(
        self,
        ws: LaneSocket,
        head: Head,
        handler: LaneHandler,
        address: str,
        release: Callable[[], None],
    ) -> None:
        """Run ``handler`` on a lean WebSocket; one access line when it ends."""
        path = head.path
        address = self.lanes.settings().client(address, head.headers)
        started = time.perf_counter()
        self.lane_sockets.add(ws)
        try:
            serving = handler(ws, head, address)
            del head
            await serving
        finally:
            self.lane_sockets.discard(ws)
            release()
            log_websocket(
                "public",
                address,
                path,
                accepted=ws.accepted,
                code=ws.close_code,
                elapsed=time.perf_counter() - started,
                received=ws.bytes_in,
                sent=ws.bytes_out,
            )
        if ws.accepted and not ws.closed:
            await ws.drain(DRAIN_TIMEOUT)

    async def _serve_hypercorn(
        self, sock: socket.socket, tsock: trio.socket.SocketType, raw: bytes
    ) -> None:
        """Hand the connection to Hypercorn, the bytes already read replayed first."""
        stream = ReplayStream(trio.SocketStream(tsock), raw, sock)
        server = TCPServer(
            self.app,
            self.hyper,
            self._context,
            ConnectionState(
                {
                    **self._lifespan_state,
                    HOLD_NEXT_WRITE: stream.hold_next_write,
                    ON_HANGUP: stream.on_hangup,
                }
            ),
            stream,  # type: ignore[arg-type]  # duck-typed: a plain SocketStream is accepted too
        )
        server.idle_task = QuickSingleTask()  # the same timer, without a wait per request
        await server.run()

    async def _keep_alive(self) -> None:
        """One task for every lane socket: ping each on its interval, drop the silent ones."""
        while True:
            settings = self.lanes.settings()
            interval, timeout = settings.ping_interval, settings.idle_timeout
            now = trio.current_time()
            steps = [s for s in (interval, timeout) if s]
            for ws in list(self.lane_sockets):
                if not ws.accepted or ws.closed:
                    continue
                ping, idle = interval, timeout
                if ws.keepalive is not None:  # the socket's own (asgiws.KEEPALIVE)
                    ping, idle = ws.keepalive
                    steps.extend(s for s in ws.keepalive if s)
                if idle and now - ws.last_heard >= idle:
                    ws.abort()
                elif ping and now - ws.last_ping >= ping:
                    ws.last_ping = now
                    ws.ping_nowait()
            await trio.sleep(min(1.0, max(0.05, min(steps) / 4)) if steps else 1.0)
