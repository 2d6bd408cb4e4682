"""One connected MoosicBox sender (a MoosicBox server behind NAT) and its requests in flight."""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING

import trio

from ..config import MoosicBoxConfig
from ..tunnel.asgi import ServerWebSocket, WebSocketClosed
from .reassembly import Reassembly
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
    """The sender went away (or was replaced) before the request was answered."""


class SenderBusy(Exception):
    """The sender already has ``max_requests_per_client`` requests in flight."""


class Pending:
    """One request parked under its id until the sender's packets answer it."""

    def __init__(self, request_id: int, max_bytes: int) -> None:
        self.id = request_id
        self.packets = Reassembly(max_bytes)
        self.failure: str | None = None  # why the sender can no longer answer it
        self.closed = False
        self._changed = trio.Event()

    def changed(self) -> None:
        """Wake the request's task (a packet came, or it failed)."""
        self._changed.set()

    def fail(self, reason: str) -> None:
        """The request cannot complete; its task answers 502 or cuts the body."""
        if self.failure is None:
            self.failure = reason
        self.changed()

    async def wait(self) -> None:
        """Return at the next packet or failure (at once if one came since the last wait)."""
        await self._changed.wait()
        self._changed = trio.Event()


class Sender:
    """A sender socket: a reader routing packets to requests and replies to app sockets, and a
    writer for the frames sent to it (HTTP, WS, ABORT) in the order they were queued."""

    def __init__(self, client_id: str, ws: ServerWebSocket, state: MoosicBox) -> None:
        self.client_id = client_id
        self.ws = ws
        self.state = state
        self.config: MoosicBoxConfig = state.config
        self.requests: dict[int, Pending] = {}
        self.lost = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._cancel: trio.CancelScope | None = None
        self._queued = 0  # bytes waiting for the writer
        self._room = trio.Event()
        # Bounded by _queued for requests and app messages (send); ABORTs are one per request.
        self._out_in, self._out = trio.open_memory_channel[str](math.inf)

    def __repr__(self) -> str:
        return f"<Sender {self.client_id} requests={len(self.requests)}>"

    # -- requests --------------------------------------------------------------------------------

    def open(self) -> Pending:
        """Park a new request under a fresh random u64 id; SenderLost, SenderBusy."""
        if self.lost or self.close_code is not None:
            raise SenderLost()
        if len(self.requests) >= self.config.max_requests_per_client:
            raise SenderBusy()
        while True:
            request_id = secrets.randbits(64)
            if request_id and request_id not in self.requests:
                break
        pending = Pending(request_id, self.config.max_pending_bytes)
        self.requests[request_id] = pending
        return pending

    def finish(self, pending: Pending) -> None:
        """Forget a request; ABORT it at the sender unless every packet came (idempotent)."""
        if pending.closed:
            return
        pending.closed = True
        self.requests.pop(pending.id, None)
        if not pending.packets.complete and not self.lost:
            self.post(abort_frame(pending.id))

    async def send(self, frame: str) -> None:
        """Queue a frame for the sender, waiting while ``max_pending_bytes`` are already queued;
        SenderLost once it is gone."""
        while not self.lost and self._queued > self.config.max_pending_bytes:
            self._room = trio.Event()
            await self._room.wait()
        if self.lost:
            raise SenderLost()
        self.post(frame)

    def post(self, frame: str) -> None:
        """Queue a frame for the writer at once (ABORTs; usable from sync code)."""
        if not self.lost:
            self._queued += len(frame)
            self._out_in.send_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        """End the session: requests in flight fail, the sender gets ``code``."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._cancel is not None:
            self._cancel.cancel()

    # -- tasks -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the sender until it leaves or ``close`` is called."""
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                if self.close_code is not None:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._write)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self.lost = True
            self._room.set()
            for pending in list(self.requests.values()):
                pending.fail("the MoosicBox sender went away")
            if self.close_code is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self.ws.close(self.close_code, self.close_reason)

    async def _write(self) -> None:
        async for frame in self._out:
            await self.ws.send(frame)
            self._queued -= len(frame)
            self._room.set()

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketClosed:
                return
            if isinstance(message, bytes):
                self.on_packet(message)
            else:
                self.on_text(message)

    def on_packet(self, data: bytes) -> None:
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
        pending = self.requests.get(packet.request_id)
        if pending is None or pending.failure is not None:
            log.debug("moosicbox %s: packet for unknown request", self.client_id)
            return
        try:
            pending.packets.feed(packet)
        except WireError as exc:
            self._fail(packet.request_id, str(exc))
            return
        pending.changed()

    def _fail(self, request_id: int, reason: str) -> None:
        log.warning("moosicbox %s: request %d failed: %s", self.client_id, request_id, reason)
        pending = self.requests.get(request_id)
        if pending is not None:
            pending.fail(reason)
            self.finish(pending)

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
