"""One connected MoosicBox sender (a MoosicBox server behind NAT) and its requests in flight."""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ..config import MoosicBoxConfig
from ..exchange import Exchange, ExchangeTable, Limits
from ..tunnel.asgi import ServerWebSocket
from .served import ServedSocket
from .wire import (
    MIN_PACKET,
    PACKET_HEAD,
    PacketError,
    WireError,
    abort_frame,
    decode_packet,
    decode_reply,
)

if TYPE_CHECKING:
    from .state import MoosicBox

log = logging.getLogger("wstund.moosicbox")
REPLY_PREFIX = "TUNNEL_RESPONSE:"  # MoosicBox's base64 text packets: refused (never matched)


class SenderLost(Exception):
    """The sender went away (or was replaced) before the request was sent."""


class SenderBusy(Exception):
    """The sender already has ``max_requests_per_client`` requests in flight."""


class PacketExchange(Exchange[int]):
    """An exchange fed packet by packet, which waits as ``Exchange.feed`` does while its caller
    is behind (``feed`` itself takes no packet number)."""

    async def feed_packet(self, body: bytes, seq: int, timeout: float) -> None:
        """Packet ``seq``; waits up to ``timeout`` for the caller to take bytes, then stalls."""
        if body and not self.core.done:
            with trio.move_on_after(timeout) as waited:
                while not self.core.has_room(len(body)):
                    await self._changed.wait()
            if waited.cancelled_caught:
                self._apply(self.core.on_stall(f"the caller took nothing for {timeout:g} s"))
                return
        self.on_data(body, seq)


def new_request_id() -> int:
    """A random non-zero u64 (MoosicBox's ids; 0 means "no request" in replies)."""
    return secrets.randbits(64) or 1


class Sender(ServedSocket):
    """A sender socket: a reader routing packets to requests and replies to app sockets, and a
    writer for the frames sent to it (HTTP, WS, ABORT) in the order they were queued."""

    def __init__(self, client_id: str, ws: ServerWebSocket, state: MoosicBox) -> None:
        super().__init__(ws)
        self.client_id = client_id
        self.state = state
        self.exchanges = ExchangeTable[int](new_request_id, PacketExchange)
        # In-order bytes past max_pending_bytes slow the sender (its reader waits, TCP pushes
        # back); packets held out of order may take as much again before the request is cut.
        pending = self.config.max_pending_bytes
        self.limits = Limits(window=pending, overdraft=pending)
        self.lost = False
        self._queued = 0  # bytes waiting for the writer
        self._room = trio.Event()
        # Bounded by _queued for requests and app messages (send); ABORTs are one per request.
        self._out_in, self._out = trio.open_memory_channel[str](math.inf)

    @property
    def config(self) -> MoosicBoxConfig:
        """The live ``[moosicbox]`` settings (a reload applies to connected senders too)."""
        return self.state.config

    def __repr__(self) -> str:
        return f"<Sender {self.client_id} requests={len(self.exchanges)}>"

    # -- requests --------------------------------------------------------------------------------

    def open(self) -> Exchange[int]:
        """Park a new request under a fresh random u64 id; SenderLost, SenderBusy."""
        if self.lost or self.close_code is not None:
            raise SenderLost()
        if len(self.exchanges) >= self.config.max_requests_per_client:
            raise SenderBusy()
        return self.exchanges.open(self, self, self.limits, ordered=True)

    # Link: what the engine asks of the sender's socket.

    def grant(self, exchange: Exchange[Any], credit: int) -> None:
        """MoosicBox senders have no credit: their bound is the engine's (cut past it)."""

    def abort(self, exchange: Exchange[Any], reason: str) -> None:
        """Tell the sender to stop producing the request's packets (at once)."""
        log.info("moosicbox %s: ABORT %d: %s", self.client_id, exchange.id, reason)
        self.post(abort_frame(exchange.id))

    async def send(self, frame: str) -> None:
        """Queue a frame for the sender, waiting (up to request_timeout) while
        ``max_pending_bytes`` are already queued; SenderLost once it is gone."""
        timeout = self.config.request_timeout or math.inf
        with trio.move_on_after(timeout):
            while not self.lost and self._queued > self.config.max_pending_bytes:
                self._room = trio.Event()
                await self._room.wait()
        if self.lost or self._queued > self.config.max_pending_bytes:
            raise SenderLost()  # gone, or not reading for request_timeout
        self.post(frame)

    def post(self, frame: str) -> None:
        """Queue a frame for the writer at once (ABORTs; usable from sync code)."""
        if not self.lost:
            self._queued += len(frame)
            self._out_in.send_nowait(frame)

    # -- the socket ------------------------------------------------------------------------------

    def ended(self) -> None:
        """Requests in flight fail: 502 before their head, a cut body after it."""
        self.lost = True
        self._room.set()
        self.exchanges.owner_lost(self)

    async def _write(self) -> None:
        async for frame in self._out:
            await self.ws.send(frame)
            self._queued -= len(frame)
            self._room.set()

    async def on_message(self, message: str | bytes) -> None:
        """A packet (binary) or a reply for app sockets (text)."""
        if isinstance(message, bytes):
            await self.on_packet(message)
        else:
            self.on_text(message)

    async def on_packet(self, data: bytes) -> None:
        """A binary frame: one packet of a response, checked before it touches anything."""
        if len(data) > self.config.max_frame_size:
            if len(data) >= MIN_PACKET:
                self._fail(
                    PACKET_HEAD.unpack_from(data)[0],
                    f"a {len(data)}-byte packet, over moosicbox.max_frame_size",
                )
            return
        try:
            packet = decode_packet(data)
        except PacketError as exc:
            self._fail(exc.request_id, str(exc))
            return
        except WireError as exc:
            log.warning("moosicbox %s: packet refused: %s", self.client_id, exc)
            return
        exchange = self.exchanges.find(self, packet.request_id)
        if exchange is None or exchange.done:
            log.debug("moosicbox %s: packet for no request in flight", self.client_id)
            return
        if packet.packet_id == 1:
            assert packet.status is not None and packet.headers is not None
            exchange.on_head(packet.status, list(packet.headers.items()))
        # Ordered by packet_id in the engine: packets that overtook packet 1 wait for it there.
        # A caller behind by max_pending_bytes holds this reader up to stall_timeout, so the
        # sender slows down with it; past that the request fails and the reader goes on.
        assert isinstance(exchange, PacketExchange)
        await exchange.feed_packet(packet.body, packet.packet_id, self.config.stall_timeout)
        if packet.last:
            exchange.on_end(last_seq=packet.packet_id)

    def _fail(self, request_id: int, reason: str) -> None:
        """A request the sender broke: it fails (502, or a cut body) and is aborted."""
        log.warning("moosicbox %s: request %d failed: %s", self.client_id, request_id, reason)
        exchange = self.exchanges.find(self, request_id)
        if exchange is not None and not exchange.done:
            exchange.on_error(reason)
            self.abort(exchange, reason)

    def on_text(self, text: str) -> None:
        """A text frame: a reply or push for this client's app sockets."""
        if text.startswith(REPLY_PREFIX):
            log.warning("moosicbox %s: TUNNEL_RESPONSE text refused", self.client_id)
            return
        try:
            reply = decode_reply(text)
        except WireError as exc:
            log.warning("moosicbox %s: text frame refused: %s", self.client_id, exc)
            return
        self.state.deliver(self.client_id, reply)
