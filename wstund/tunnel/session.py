"""One connected agent (a TunnelSession) and the streams (requests) multiplexed over its socket."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from .. import closecodes
from ..exchange import Exchange, ExchangeTable, FailKind, Limits
from ..keepalive import keep_alive
from .asgi import ServerWebSocket, WebSocketClosed
from .flow import ReceiveWindow, SendCredit, frame_cost
from .frames import (
    MAX_STREAM_ID,
    Frame,
    FrameError,
    Hello,
    Kind,
    Ping,
    Pong,
    ResponseHead,
    decode,
    decode_control,
    decode_response,
    decode_response_head,
    decode_window,
    encode_control,
    encode_text,
    encode_window,
)
from .registry import ClientRecord
from .writer import FrameWriter, WriterClosed

log = logging.getLogger("wstund.tunnel")


class SessionLost(Exception):
    """The agent went away (or broke the protocol) while a stream was in flight."""


class SessionFull(Exception):
    """The agent already has as many streams in flight as allowed."""


@dataclass(frozen=True)
class SessionLimits:
    """Flow-control parameters of a session, fixed when it starts (announced in ``hello``)."""

    window: int
    max_frame: int
    max_message: int
    max_streams: int
    ping_interval: float
    idle_timeout: float


class Stream:
    """One request in flight. An HTTP request's response goes through the exchange engine
    (``exchange``); a WebSocket's frames queue in ``inbox``, bounded by credit."""

    def __init__(
        self, stream_id: int, limits: SessionLimits, exchange: Exchange[int] | None = None
    ) -> None:
        self.id = stream_id
        self.exchange = exchange
        self.response: ResponseHead | None = None  # the agent's head (HTTP streams)
        overdraft = max(limits.max_frame, limits.max_message)
        self.window = ReceiveWindow(limits.window, overdraft)
        # Every BODY/TEXT frame holds at least one byte of credit, so the credit rule bounds the
        # number of queued frames too; the credit-free kinds come once each (``deliver``).
        self._inbox_in, self._inbox = trio.open_memory_channel[Frame](self.window.limit + 8)
        self.credit = SendCredit(limits.window)
        self.finished = False  # both directions ended normally: no ABORT needed
        self.closed = False  # finish() ran
        self._headed = False  # a HEAD was queued
        self._ended = False  # END, ABORT or ERROR was queued: nothing more is

    def deliver(self, frame: Frame) -> bool:
        """Queue a frame from the agent (reader task; never blocks). A HEAD, END, ABORT or
        ERROR costs no credit, so each is taken once: False for a second HEAD (the stream
        breaks), and nothing is queued after the end."""
        if self._ended:
            return True
        if frame.kind == Kind.HEAD:
            if self._headed:
                return False
            self._headed = True
        elif frame.kind in (Kind.END, Kind.ABORT, Kind.ERROR):
            self._ended = True
        self._inbox_in.send_nowait(frame)
        return True

    def fail(self) -> None:
        """The session is gone: wake the stream's owner in both directions."""
        self._inbox_in.close()
        self.credit.close()

    def discard(self) -> None:
        """Fail and drop the queued frames at once (the stream broke the protocol)."""
        self.fail()
        while True:
            try:
                self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    async def next_frame(self) -> Frame:
        """The next frame from the agent; SessionLost once the session is gone."""
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise SessionLost() from None


class AgentLink:
    """The engine's way back to the agent: WINDOW grants and ABORT frames, queued."""

    def __init__(self, session: TunnelSession) -> None:
        self.session = session

    def grant(self, exchange: Exchange[int], credit: int) -> None:
        """Give the agent ``credit`` more bytes on the stream."""
        self.session.post(encode_window(exchange.id, credit))

    def abort(self, exchange: Exchange[int], reason: str) -> None:
        """Tell the agent to give the stream up."""
        failure = exchange.failure
        if failure is not None and failure.kind is not FailKind.CALLER:
            log.warning("tunnel %s stream %d: %s", self.session.client_id, exchange.id, reason)
            if failure.kind is FailKind.OVERRUN:
                reason = "credit overrun"
        self.session.post(encode_text(exchange.id, Kind.ABORT, reason[:200]))


def _no_id() -> int:
    raise AssertionError("tunnel exchanges take their stream's id")


class TunnelSession:
    """An authenticated agent socket: a reader demultiplexing frames, keepalive, a writer."""

    def __init__(
        self, client_id: str, record: ClientRecord, ws: ServerWebSocket, limits: SessionLimits
    ) -> None:
        self.client_id = client_id
        self.record = record
        self.ws = ws
        self.limits = limits
        self.streams: dict[int, Stream] = {}
        self.lost = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_heard = trio.current_time()
        self._last_id = 0
        self._cancel_scope: trio.CancelScope | None = None
        # Every write to the agent goes through one task, so no frame is ever torn; control
        # frames (ABORT, WINDOW, pong) are bounded by the streams in flight plus keepalive.
        overdraft = max(limits.max_frame, limits.max_message)
        self.writer = FrameWriter(
            ws.send,
            max_queued=2 * overdraft,
            max_posted=64 * 1024 + 256 * limits.max_streams,
            write_many=ws.send_many,
        )
        self.exchanges: ExchangeTable[int] = ExchangeTable(_no_id)
        self.exchange_limits = Limits(limits.window, overdraft, grant_at=limits.window // 2)
        self._link = AgentLink(self)

    def __repr__(self) -> str:
        return f"<TunnelSession {self.client_id} streams={len(self.streams)}>"

    # -- streams -------------------------------------------------------------------------------

    def open_stream(self, http: bool = False) -> Stream:
        """Allocate a stream id (``http``: its response through the exchange engine);
        SessionLost if the agent is gone, SessionFull at the limit."""
        if self.lost or self.close_code is not None:
            raise SessionLost()
        if len(self.streams) >= self.limits.max_streams:
            raise SessionFull()
        while True:
            self._last_id = self._last_id % MAX_STREAM_ID + 1
            if self._last_id not in self.streams:
                break
        exchange = None
        if http:
            exchange = self.exchanges.open(
                self, self._link, self.exchange_limits, exchange_id=self._last_id
            )
        stream = Stream(self._last_id, self.limits, exchange)
        self.streams[stream.id] = stream
        return stream

    def finish(self, stream: Stream, reason: str = "cancelled") -> None:
        """Forget a stream; tell the agent to abort it unless it ended normally (idempotent)."""
        if stream.closed:
            return
        stream.closed = True
        self.streams.pop(stream.id, None)
        stream.fail()
        if stream.exchange is not None:
            stream.exchange.close(reason)  # ABORT at once unless the response ended
        elif not stream.finished and not self.lost:
            self.post(encode_text(stream.id, Kind.ABORT, reason))

    def took(self, stream: Stream, payload: bytes) -> None:
        """The caller took ``payload`` of ``stream``: count it, grant the agent its credit back."""
        self.record.bytes_out += len(payload)
        grant = stream.window.consumed(frame_cost(payload))
        if grant:
            self.post(encode_window(stream.id, grant))

    async def send(self, data: bytes) -> None:
        """Hand one frame to the writer (waits while the socket is behind); SessionLost if
        gone. Cancel-safe: a frame handed over is written whole."""
        if self.lost:
            raise SessionLost()
        try:
            await self.writer.send(data)
        except WriterClosed:
            raise SessionLost() from None

    def post(self, data: str | bytes) -> None:
        """Queue a small control frame for the writer (usable from sync code); an agent that
        leaves too many unread is closed."""
        if not self.lost and not self.writer.post(data):
            log.warning("tunnel %s: agent not reading its socket, closing", self.client_id)
            self.close(closecodes.POLICY_VIOLATION, "not reading")

    def close(self, code: int, reason: str) -> None:
        """End the session: in-flight streams fail, the agent gets ``code``."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    # -- tasks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the agent until it leaves or ``close`` is called."""
        limits = self.limits
        hello = Hello(
            client_id=self.client_id,
            window=limits.window,
            max_frame=limits.max_frame,
            max_message=limits.max_message,
            ping_interval=limits.ping_interval,
            idle_timeout=limits.idle_timeout,
            whole_responses=True,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self.close_code is not None:
                    nursery.cancel_scope.cancel()
                await self.ws.send(encode_control(hello))
                nursery.start_soon(self.writer.run)
                nursery.start_soon(self._keepalive)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self.lost = True
            self.writer.close()
            self.exchanges.owner_lost(self)
            for stream in list(self.streams.values()):
                stream.fail()
            if self.close_code is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self.ws.close(self.close_code, self.close_reason)

    async def _read(self) -> None:
        """Demultiplex the agent's frames into the streams' inboxes until it leaves."""
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketClosed:
                return
            self.last_heard = trio.current_time()
            try:
                if isinstance(message, str):
                    self._on_control(message)
                else:
                    self._on_frame(decode(message))
            except FrameError as exc:
                log.warning("tunnel %s: protocol error: %s", self.client_id, exc)
                self.close(closecodes.POLICY_VIOLATION, f"protocol error: {exc}"[:120])
                return

    def _on_control(self, text: str) -> None:
        message = decode_control(text)
        if isinstance(message, Ping):
            self.post(encode_control(Pong()))

    def _on_frame(self, frame: Frame) -> None:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            return  # a late frame of a stream we already finished or aborted
        if frame.kind == Kind.WINDOW:
            stream.credit.grant(decode_window(frame.payload))
            return
        if stream.exchange is not None:
            self._on_response(stream, stream.exchange, frame)
            return
        if frame.kind == Kind.RESPONSE:
            log.warning("tunnel %s stream %d: RESPONSE on a WebSocket", self.client_id, stream.id)
            stream.discard()
            self.finish(stream, "protocol error")
            return
        if frame.kind in (Kind.BODY, Kind.TEXT):
            try:
                stream.window.received(frame_cost(frame.payload))
            except FrameError as exc:
                log.warning("tunnel %s stream %d: %s", self.client_id, stream.id, exc)
                stream.discard()
                self.finish(stream, "credit overrun")
                return
        if not stream.deliver(frame):
            log.warning("tunnel %s stream %d: second HEAD", self.client_id, stream.id)
            stream.discard()
            self.finish(stream, "protocol error")

    def _on_response(self, stream: Stream, exchange: Exchange[int], frame: Frame) -> None:
        """An HTTP stream's frame, fed to the exchange engine (which bounds every kind)."""
        kind = frame.kind
        if kind in (Kind.HEAD, Kind.RESPONSE):  # RESPONSE: HEAD, BODY and END in one frame
            if exchange.head is not None or exchange.done:
                exchange.on_head(0, [])  # a second head: the engine breaks the stream
                return
            body = b""
            try:
                if kind == Kind.HEAD:
                    stream.response = decode_response_head(frame.payload)
                else:
                    stream.response, body = decode_response(frame.payload)
            except FrameError as exc:
                exchange.on_error(str(exc))
                self._link.abort(exchange, "bad response head")
                return
            exchange.on_head(stream.response.status, stream.response.headers)
            if kind == Kind.RESPONSE:
                if body:
                    exchange.on_data(body)
                exchange.on_end()
                stream.finished = exchange.core.finished
        elif kind == Kind.BODY:
            exchange.on_data(frame.payload)
        elif kind == Kind.END:
            exchange.on_end()
            stream.finished = exchange.core.finished
        elif kind == Kind.ERROR:
            text = frame.payload[:200].decode(errors="replace")
            exchange.on_error(text or "the agent gave up the request")
        elif kind == Kind.ABORT:
            exchange.on_error("the agent gave up the request")
        else:
            exchange.on_error(f"unexpected {kind.name} frame on an HTTP stream")
            self._link.abort(exchange, "protocol error")

    async def _keepalive(self) -> None:
        """Ping every ``ping_interval``; drop an agent silent for ``idle_timeout``."""
        limits = self.limits

        async def ping() -> None:
            self.post(encode_control(Ping()))

        await keep_alive(
            lambda: (limits.ping_interval, limits.idle_timeout), lambda: self.last_heard, ping
        )
        log.info("tunnel %s: idle for %.0f s, closing", self.client_id, limits.idle_timeout)
        self.close(closecodes.GOING_AWAY, "idle timeout")
