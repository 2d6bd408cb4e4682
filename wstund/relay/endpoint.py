"""The relay's WebSocket endpoint: glue between a Quart-Trio websocket and a Peer."""

from __future__ import annotations

import logging
from typing import Any

import trio

from .. import closecodes
from ..hub import Hub
from ..hypercorn_ws import batch_sender
from . import handlers, ownership, protocol
from .peer import Peer

log = logging.getLogger("wstund.relay")


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
    refusal = hub.admit(address)
    if refusal is not None:
        await websocket.send(protocol.encode_error(protocol.TOO_MANY_CONNECTIONS, refusal))
        await websocket.close(closecodes.RATE_LIMITED, "too many connections")
        return
    relay = hub.config.relay
    peer = Peer(
        websocket.send,
        websocket.close,
        address=address,
        outbox_size=relay.outbox_size,
        slow_consumer_timeout=relay.slow_consumer_timeout,
        max_queued_bytes=relay.max_queued_bytes,
        on_close=hub.detach,
        send_batch=batch_sender(websocket.scope),
        batch_bytes=relay.write_batch_bytes,
    )
    peer.browser_key = browser_key
    hub.peers.add(peer)
    log.debug("relay socket %s open", peer)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_frames, hub, peer, websocket)
            await peer.run()
            nursery.cancel_scope.cancel()
    finally:
        hub.detach(peer)
        hub.release(address)
        log.debug("relay socket %s closed (%s)", peer, peer.close_code)


async def _read_frames(hub: Hub, peer: Peer, websocket: Any) -> None:
    """Hand each received frame to the handlers until the peer starts closing."""
    try:
        while not peer.closing:
            data = await websocket.receive()
            if isinstance(data, str):
                await handlers.handle_text(hub, peer, data)
            else:
                await handlers.handle_binary(hub, peer, data or b"")
    except Exception:
        log.exception("relay socket %s: internal error", peer)
        peer.close(closecodes.INTERNAL_ERROR, "internal error", flush=False)
