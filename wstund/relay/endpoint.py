"""The relay's WebSocket endpoint: a Peer on a lean-lane socket (``serve_lane``) or on a
Quart-Trio websocket (``serve_socket``, for upgrades that reach Hypercorn: a second request on
a kept-alive connection)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from werkzeug.datastructures import Headers

from .. import closecodes
from ..cluster.forward import restore_host
from ..hub import Hub
from ..transport.head import Head
from ..transport.websocket import LaneSocket
from ..tunnel.proxy import route as tunnel_route
from ..web.auth import server_access
from . import handlers, ownership, protocol
from .peer import Frame, Peer

if TYPE_CHECKING:
    from ..transport.server import LaneHandler

log = logging.getLogger("wstund.relay")
PATHS = ("/ws", "/websocket")
_UNAUTHORIZED = (
    json.dumps(
        {"error": "unauthorized", "message": "a valid server token is required"},
        separators=(",", ":"),
    )
    + "\n"
).encode()


def lane_route(hub: Hub) -> Callable[[Head], LaneHandler | None]:
    """The lean lane's router for ``hub``: relay upgrades to ``serve_lane``, the rest None."""

    async def handler(ws: LaneSocket, head: Head, address: str) -> None:
        await serve_lane(hub, ws, head, address)

    def route(head: Head) -> LaneHandler | None:
        if not head.is_websocket_upgrade or head.path not in PATHS:
            return None
        scope = {"type": "websocket", "path": head.path, "headers": head.headers}
        if hub.cluster is not None:  # carried from another node: the caller's Host
            restore_host(scope, hub.config.cluster.secret)
        if tunnel_route(scope, hub.config.tunnel.host_suffix) is not None:
            return None  # a tunnel's host: its own /ws
        return handler

    return route


async def refuse_lane(ws: LaneSocket, reason: str) -> None:
    """A relay client past the connection caps: the relay's error, then close 4029."""
    await ws.accept(permessage_deflate=False)
    await ws.write([ws.encode(protocol.encode_error(protocol.TOO_MANY_CONNECTIONS, reason))])
    await ws.close(closecodes.RATE_LIMITED, "too many connections")


def _lane_refusal(hub: Hub, head: Head) -> int | None:
    """The status (401) or close code (1008) refusing a relay upgrade, or None: the checks of
    the Quart route."""
    config = hub.config
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers])
    if not server_access(config, headers, head.args()):
        return 401
    origins = config.server.allowed_origins
    origin = headers.get("Origin")
    if origins and origin is not None and origin not in origins:
        return closecodes.POLICY_VIOLATION
    return None


async def serve_lane(hub: Hub, ws: LaneSocket, head: Head, address: str) -> None:
    """The relay on the lean lane: the same token and origin checks as the Quart route."""
    refusal = _lane_refusal(hub, head)
    cookie = head.header(b"cookie")
    browser_key = ownership.browser_key(None if cookie is None else cookie.decode("latin-1"))
    set_cookie: list[tuple[bytes, bytes]] = []
    if browser_key is None:
        browser_key = ownership.new_key()
        set_cookie = [(b"set-cookie", ownership.set_cookie(browser_key).encode())]
    del head  # an open socket keeps no request head
    if refusal == 401:
        await ws.reject(
            401,
            [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="wstun"'),
            ],
            _UNAUTHORIZED,
        )
        return
    if refusal == closecodes.POLICY_VIOLATION:
        await ws.accept(permessage_deflate=False)
        await ws.close(closecodes.POLICY_VIOLATION, "origin not allowed")
        return
    await ws.accept(permessage_deflate=hub.config.relay.permessage_deflate, headers=set_cookie)
    await _serve(hub, ws, address, ws.receive, browser_key)


class _QuartLink:
    """A Quart-Trio websocket as a Peer's link: every frame goes through its writer task."""

    owes = False

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket

    def encode(self, frame: Frame) -> Frame:
        return frame

    def write_nowait(self, item: Frame) -> int:
        return 0

    async def write(self, items: list[Frame]) -> None:
        for item in items:
            await self._websocket.send(item)

    async def close(self, code: int, reason: str) -> None:
        await self._websocket.close(code, reason)


async def serve_socket(hub: Hub, websocket: Any, address: str) -> None:
    """Run one relay connection until it closes; the caller has already checked the token."""
    # The browser key proves room ownership to reclaim_instance (relay.ownership); a browser
    # that has none is given one with the handshake.
    browser_key = ownership.browser_key(websocket.headers.get("Cookie"))
    if browser_key is None:
        browser_key = ownership.new_key()
        await websocket.accept(headers={"Set-Cookie": ownership.set_cookie(browser_key)})
    else:
        await websocket.accept()

    async def receive() -> Frame | None:
        data = await websocket.receive()  # a disconnect cancels this task (Quart-Trio)
        return data if data is not None else b""

    # The object behind Quart's context-local proxy: writers start from other tasks' contexts.
    link = _QuartLink(websocket._get_current_object())
    await _serve(hub, link, address, receive, browser_key)


async def _serve(
    hub: Hub,
    link: LaneSocket | _QuartLink,
    address: str,
    receive: Callable[[], Awaitable[Frame | None]],
    browser_key: str,
) -> None:
    refusal = hub.admit(address)
    if refusal is not None:
        error = protocol.encode_error(protocol.TOO_MANY_CONNECTIONS, refusal)
        await link.write([link.encode(error)])
        await link.close(closecodes.RATE_LIMITED, "too many connections")
        return
    relay = hub.config.relay
    peer = Peer(
        link,
        address=address,
        outbox_size=relay.outbox_size,
        slow_consumer_timeout=relay.slow_consumer_timeout,
        max_queued_bytes=relay.max_queued_bytes,
        on_close=hub.detach,
        batch_bytes=relay.write_batch_bytes,
    )
    peer.browser_key = browser_key
    hub.peers.add(peer)
    log.debug("relay socket %s open", peer)
    try:
        async with trio.open_nursery() as nursery:
            peer.attach(nursery)
            await _read_frames(hub, peer, receive)
            await peer.finish()
            nursery.cancel_scope.cancel()
    finally:
        hub.detach(peer)
        hub.release(address)
        log.debug("relay socket %s closed (%s)", peer, peer.close_code)


async def _read_frames(
    hub: Hub, peer: Peer, receive: Callable[[], Awaitable[Frame | None]]
) -> None:
    """Hand each received frame to the handlers until the peer starts closing or leaves."""
    try:
        with peer.read_scope:
            while not peer.closing:
                peer.receiving = True
                data = await receive()
                peer.receiving = False
                if data is None:
                    return
                if isinstance(data, str):
                    await handlers.handle_text(hub, peer, data)
                else:
                    await handlers.handle_binary(hub, peer, data)
    except Exception:
        log.exception("relay socket %s: internal error", peer)
        peer.close(closecodes.INTERNAL_ERROR, "internal error", flush=False)
