"""The agent's connection to wstund: authenticate, demultiplex frames, keepalive, reconnect."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import trio

from ..keepalive import keep_alive
from ..tunnel.flow import StreamGone
from ..tunnel.frames import (
    Frame,
    FrameError,
    Hello,
    Kind,
    Ping,
    Pong,
    decode,
    decode_control,
    decode_request_head,
    decode_window,
    encode_control,
    encode_text,
)
from ..tunnel.writer import FrameWriter, WriterClosed
from . import link
from .backoff import reconnect_delay
from .forward import forward_http, forward_websocket
from .local import LocalApp
from .streams import AgentStream, StreamAborted

log = logging.getLogger("wstund.agent")

CLIENT_ID_HEADER = "x-wstun-client-id"
MAX_MESSAGE = 16 * 1024 * 1024


class AuthenticationFailed(Exception):
    """wstund refused the client id or secret (HTTP 401/403/404 on the upgrade)."""


@dataclass(frozen=True)
class AgentConfig:
    """What the agent connects to and forwards to."""

    server: str  # wstund base URL, http(s)://host:port
    client_id: str
    secret: str
    target: str  # local base URL, http://127.0.0.1:8080
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def connect_url(self) -> str:
        """The agent socket URL: ws(s) form of the server URL + /_tunnel/connect."""
        base = self.server.rstrip("/")
        if base.startswith("http"):
            base = "ws" + base[4:]
        return f"{base}/_tunnel/connect?client_id={quote(self.client_id, safe='')}"


class Agent:
    """Keeps one socket to wstund (reconnecting) and forwards every stream to the target."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.streams: dict[int, AgentStream] = {}
        self.online = False
        self.sessions = 0  # sessions that got their hello
        self.last_close: tuple[int, str] | None = None
        self._changed = trio.Event()
        self._last_heard = 0.0

    async def wait_sessions(self, count: int) -> None:
        """Return once ``count`` sessions (reconnects included) have been established."""
        while self.sessions < count:
            await self._wait_change()

    async def wait_offline(self) -> None:
        """Return once the current session is gone."""
        while self.online:
            await self._wait_change()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Connect, serve, and reconnect with capped exponential backoff until cancelled."""
        client = LocalApp(self.config.target, self.config.connect_timeout)
        try:
            attempt = 0
            while True:
                try:
                    if await self._connect_once(client):
                        attempt = 0
                except AuthenticationFailed:
                    raise
                except Exception:  # a bug in one session must not end the agent: log, reconnect
                    log.exception("agent session failed")
                delay = reconnect_delay(
                    attempt, self.config.backoff_initial, self.config.backoff_max
                )
                attempt += 1
                log.info("reconnecting in %.1f s", delay)
                await trio.sleep(delay)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _connect_once(self, client: LocalApp) -> bool:
        """One session; True if it got as far as the hello (so backoff restarts)."""
        config = self.config
        headers = [
            (b"authorization", f"Bearer {config.secret}".encode()),
            (CLIENT_ID_HEADER.encode(), config.client_id.encode()),
            *((k.encode(), v.encode()) for k, v in config.extra_headers),
        ]
        try:
            ws = await link.connect(
                config.connect_url, headers, MAX_MESSAGE, config.connect_timeout
            )
        except link.Rejected as exc:
            if exc.status in (401, 403, 404):
                body = exc.body.decode(errors="replace")[:200]
                raise AuthenticationFailed(
                    f"wstund refused client {config.client_id!r}: HTTP {exc.status} {body}"
                ) from None
            log.warning("agent socket refused: HTTP %s", exc.status)
            return False
        except (OSError, link.HandshakeError, trio.TooSlowError) as exc:
            log.warning("cannot reach %s: %s", config.server, exc or type(exc).__name__)
            return False
        try:
            return await self._serve(ws, client)
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose(1000, "")

    async def _serve(self, ws: link.Link, client: LocalApp) -> bool:
        try:
            with trio.fail_after(self.config.connect_timeout):
                first = await ws.receive()
            hello = decode_control(first) if isinstance(first, str) else None
        except (link.LinkClosed, trio.TooSlowError, FrameError) as exc:
            self._log_close(ws, exc)
            return False
        if not isinstance(hello, Hello):
            log.warning("agent socket: expected hello, got %r", first[:80])
            return False
        log.info("connected to %s as %s", self.config.server, hello.client_id)
        self.online = True
        self.sessions += 1
        self._notify()
        # Every write goes through one task: a stream cancelled by ABORT mid-frame would
        # otherwise leave a torn frame on the socket and wstund would drop every stream.
        overdraft = max(hello.max_frame, hello.max_message)
        self._writer = FrameWriter(
            self._write_to(ws),
            max_queued=2 * overdraft,
            max_posted=4 * overdraft,
            write_many=self._write_to(ws),
        )
        try:
            async with trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._writer.run)
                nursery.start_soon(self._keepalive, ws, hello, nursery.cancel_scope)
                await self._read(ws, hello, client, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._writer.close()
            for stream in list(self.streams.values()):
                stream.abort()
            self.streams.clear()
            self.online = False
            self._notify()
        return True

    @staticmethod
    def _write_to(ws: link.Link) -> Callable[[Any], Awaitable[None]]:
        """Frames to the socket, several in one write (a list) or one."""

        async def write(data: list[str | bytes] | str | bytes) -> None:
            with contextlib.suppress(link.LinkClosed):  # the reader notices
                await ws.send(data if isinstance(data, list) else [data])

        return write

    def _post(self, ws: link.Link, data: str | bytes) -> None:
        """Queue a control frame; a wstund that leaves too many unread is given up."""
        if not self._writer.post(data):
            log.warning("wstund is not reading its socket, reconnecting")
            self._writer.close()
            self._session_scope.cancel()

    def _log_close(self, ws: link.Link, exc: BaseException) -> None:
        reason = ws.closed
        if reason is not None:
            self.last_close = (reason.code, reason.reason)
            log.warning("agent socket closed: %s %s", reason.code, reason.reason)
        else:
            log.warning("agent socket: %s", exc or type(exc).__name__)

    async def _read(
        self,
        ws: link.Link,
        hello: Hello,
        client: LocalApp,
        nursery: trio.Nursery,
    ) -> None:
        """Demultiplex the server's frames until the socket closes."""
        self._last_heard = trio.current_time()
        while True:
            try:
                message = await ws.receive()
            except link.LinkClosed as exc:
                self._log_close(ws, exc)
                return
            self._last_heard = trio.current_time()
            try:
                if isinstance(message, str):
                    control = decode_control(message)
                    if isinstance(control, Ping):
                        self._post(ws, encode_control(Pong()))
                    continue
                await self._on_frame(ws, decode(message), hello, client, nursery)
            except FrameError as exc:
                log.warning("protocol error from wstund: %s", exc)
                await ws.aclose(1008, "protocol error")
                return

    async def _on_frame(
        self,
        ws: link.Link,
        frame: Frame,
        hello: Hello,
        client: LocalApp,
        nursery: trio.Nursery,
    ) -> None:
        if frame.kind == Kind.HEAD:
            head = decode_request_head(frame.payload)
            overdraft = max(hello.max_frame, hello.max_message)
            new = AgentStream(frame.stream_id, head, hello.window, overdraft)
            self.streams[new.id] = new
            nursery.start_soon(self._forward, ws, new, client, hello)
            return
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            return  # a late frame of a stream that already ended
        if frame.kind == Kind.WINDOW:
            stream.credit.grant(decode_window(frame.payload))
        elif frame.kind == Kind.ABORT:
            self.streams.pop(stream.id, None)
            stream.abort()
        else:
            try:
                stream.deliver(frame)
            except FrameError as exc:
                log.warning("stream %d: %s", stream.id, exc)
                self.streams.pop(stream.id, None)
                stream.abort()
                self._post(ws, encode_text(stream.id, Kind.ABORT, "credit overrun"))

    async def _forward(
        self,
        ws: link.Link,
        stream: AgentStream,
        client: LocalApp,
        hello: Hello,
    ) -> None:
        """Run one stream; a failure aborts only this stream."""

        async def send(*frames: bytes) -> None:
            try:
                await self._writer.send(*frames)  # each handed over whole, or not at all
            except WriterClosed:
                raise StreamAborted() from None

        try:
            with stream.cancel_scope:
                if stream.head.websocket:
                    await forward_websocket(send, stream, self.config.target)
                else:
                    await forward_http(send, stream, client, hello.max_frame, hello.whole_responses)
        except* (StreamAborted, StreamGone, link.LinkClosed):
            pass
        except* Exception as group:
            log.warning("stream %d failed: %r", stream.id, group.exceptions[0])
            if not stream.aborted:
                self._post(ws, encode_text(stream.id, Kind.ABORT, "agent error"))
        finally:
            self.streams.pop(stream.id, None)

    async def _keepalive(self, ws: link.Link, hello: Hello, scope: trio.CancelScope) -> None:
        """Ping every ``ping_interval``; give the session up when wstund is silent too long."""

        async def ping() -> None:
            self._post(ws, encode_control(Ping()))

        await keep_alive(
            lambda: (hello.ping_interval, hello.idle_timeout), lambda: self._last_heard, ping
        )
        log.warning("wstund silent for %.0f s, reconnecting", hello.idle_timeout)
        scope.cancel()
