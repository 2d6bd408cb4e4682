"""A caller's HTTP request carried to a MoosicBox sender and its packets streamed (or collected)
back: 424 when the client has no sender, 504 without packet 1 in time, 502 when the sender
fails the request before its head, a cut body when after; ABORT as soon as the caller leaves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..httpheaders import BodyLimit, InvalidHead, check_headers, check_status, end_to_end, to_bytes
from ..tunnel.asgi import Receive, Send, send_json_error
from .sender import Pending, Sender, SenderBusy, SenderLost
from .wire import check_json, http_frame

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("wstund.moosicbox")
NOT_CONNECTED = "Client with ID is not connected"


@dataclass(frozen=True)
class Call:
    """What the sender is asked to fetch from its local server."""

    client_id: str
    method: str
    path: str  # the raw path without its leading "/"
    query: dict[str, str]
    headers: dict[str, str]  # accept and range only
    profile: str | None
    blocking: bool


async def send_text(send: Send, status: int, text: str, *, head: bool = False) -> None:
    """Answer with a ``text/plain`` body, the form MoosicBox's tunnel server uses for errors."""
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class CallerGone(Exception):
    """The caller disconnected before its request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The caller's whole body, or None once it is over ``limit`` bytes; CallerGone."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CallerGone()
        data = bytes(message.get("body", b""))
        size += len(data)
        if size > limit:
            return None
        parts.append(data)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _watch_disconnect(receive: Receive, caller_gone: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            caller_gone.cancel()
            return


async def proxy(hub: Hub, call: Call, receive: Receive, send: Send) -> None:
    """Carry ``call`` and the caller's JSON body to the client's sender; relay the answer."""
    config = hub.config.moosicbox
    try:
        body = await read_body(receive, config.max_request_body)
    except CallerGone:
        return
    if body is None:
        await send_json_error(
            send,
            413,
            "body_too_large",
            f"request bodies are limited to moosicbox.max_request_body ({config.max_request_body}"
            " bytes)",
            [(b"connection", b"close")],
        )
        return
    payload: str | None = None
    if body:
        try:
            payload = body.decode()
        except UnicodeDecodeError:
            payload = None
        if payload is None or not check_json(payload):
            await send_json_error(
                send, 400, "invalid_json", "a MoosicBox request body must be one JSON value"
            )
            return
    sender = hub.moosicbox.senders.get(call.client_id)
    try:
        if sender is None:
            raise SenderLost()
        pending = sender.open()
    except SenderLost:
        await send_text(send, 424, NOT_CONNECTED, head=call.method == "HEAD")
        return
    except SenderBusy:
        await send_json_error(
            send, 503, "client_busy", "the MoosicBox client has too many requests in flight"
        )
        return
    frame = http_frame(
        pending.id, call.method, call.path, call.query, payload, call.headers, call.profile
    )
    with hub.inflight.track():
        try:
            with trio.CancelScope() as caller_gone:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_disconnect, receive, caller_gone)
                    await sender.send(frame)
                    await _respond(hub, sender, pending, call, send)
                    nursery.cancel_scope.cancel()
            if caller_gone.cancelled_caught:
                log.info("moosicbox %s: caller left request %d", call.client_id, pending.id)
        except* SenderLost:
            await send_json_error(send, 502, "sender_lost", "the MoosicBox sender went away")
        finally:
            sender.finish(pending)


def _response_headers(pending: Pending, blocking: bool) -> list[tuple[bytes, bytes]]:
    """The sender's status line headers, checked; InvalidHead when they cannot be passed on."""
    packets = pending.packets
    assert packets.status is not None and packets.headers is not None
    check_status(packets.status)
    drop = ("content-length",) if blocking else ()
    headers = check_headers(end_to_end(list(packets.headers.items()), also_drop=drop))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/octet-stream"))
    return to_bytes(headers)


async def _respond(hub: Hub, sender: Sender, pending: Pending, call: Call, send: Send) -> None:
    config = hub.config.moosicbox
    timeout = config.request_timeout or float("inf")
    packets = pending.packets
    with trio.move_on_after(timeout):
        while not packets.has_head and pending.failure is None:
            await pending.wait()
    if not packets.has_head:
        if pending.failure is not None:
            await send_json_error(send, 502, "sender_error", pending.failure)
        else:
            await send_json_error(
                send, 504, "sender_timeout", f"no response from the sender within {timeout:g} s"
            )
        return
    try:
        headers = _response_headers(pending, call.blocking)
    except InvalidHead as invalid:
        await send_json_error(send, 502, "sender_error", f"the local server's response: {invalid}")
        return
    assert packets.status is not None
    if call.blocking:
        await _collect(hub, pending, send, packets.status, headers)
        return
    await send({"type": "http.response.start", "status": packets.status, "headers": headers})
    limit = BodyLimit([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
    while True:
        for chunk in packets.take():
            await send({"type": "http.response.body", "body": limit.take(chunk), "more_body": True})
            if limit.over:
                log.warning("moosicbox request %d: longer than its Content-Length", pending.id)
                packets.take()
                break
        if packets.complete or limit.over:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if pending.failure is not None:
            log.info("moosicbox request %d cut: %s", pending.id, pending.failure)
            return  # Hypercorn drops the connection: the caller sees a truncated body
        with trio.move_on_after(timeout) as idle:
            await pending.wait()
        if idle.cancelled_caught:
            log.info("moosicbox request %d cut: no packet for %g s", pending.id, timeout)
            return


async def _collect(
    hub: Hub, pending: Pending, send: Send, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    """Blocking mode: the whole body first (up to max_buffered_bytes), then one answer with
    Content-Length."""
    config = hub.config.moosicbox
    timeout = config.request_timeout or float("inf")
    cap = config.max_buffered_bytes
    packets = pending.packets
    parts: list[bytes] = []
    size = 0
    while True:
        for chunk in packets.take():
            size += len(chunk)
            parts.append(chunk)
        if size > cap:
            await send_json_error(
                send,
                502,
                "response_too_large",
                f"the response is over moosicbox.max_buffered_bytes ({cap} bytes) in blocking"
                " mode; ask without _buffer=1 to stream it",
            )
            return
        if packets.complete:
            break
        if pending.failure is not None:
            await send_json_error(send, 502, "sender_error", pending.failure)
            return
        with trio.move_on_after(timeout) as idle:
            await pending.wait()
        if idle.cancelled_caught:
            await send_json_error(
                send, 504, "sender_timeout", f"no packet from the sender for {timeout:g} s"
            )
            return
    headers = [*headers, (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
