"""A caller's HTTP request carried to a MoosicBox sender and its packets streamed (or collected)
back: 424 when the client has no sender, 504 without packet 1 in time, 502 when the sender
fails the request before its head, a cut body when after; ABORT as soon as the caller leaves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exchange import Exchange, ExchangeFailed, FailKind, Head, TooLarge, Truncated
from ..httpheaders import (
    BodyLimit,
    InvalidHead,
    check_headers,
    check_status,
    end_to_end,
    to_bytes,
    untrusted_response_headers,
)
from ..transport.replay import write_hold
from ..tunnel.asgi import Receive, Scope, Send, hangup_scope, send_json_error, send_whole
from .sender import SenderBusy, SenderLost
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
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send_whole(send, status, headers, text.encode(), head=head)


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


async def proxy(hub: Hub, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
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
        exchange = sender.open()
    except SenderLost:
        await send_text(send, 424, NOT_CONNECTED, head=call.method == "HEAD")
        return
    except SenderBusy:
        await send_json_error(
            send, 503, "client_busy", "the MoosicBox client has too many requests in flight"
        )
        return
    frame = http_frame(
        exchange.id, call.method, call.path, call.query, payload, call.headers, call.profile
    )
    with hub.inflight.track():
        try:
            async with hangup_scope(scope, receive) as caller_gone:
                await sender.send(frame)
                await _respond(hub, exchange, call, send, write_hold(scope))
            if caller_gone.cancelled_caught:
                log.info("moosicbox %s: caller left request %d", call.client_id, exchange.id)
        except* SenderLost:
            await send_json_error(send, 502, "sender_lost", "the MoosicBox sender went away")
        finally:
            exchange.close()


def _response_headers(head: Head, blocking: bool) -> list[tuple[bytes, bytes]]:
    """The sender's status and headers, checked; InvalidHead when they cannot be passed on."""
    check_status(head.status)
    drop = {"content-length"} if blocking else set()
    headers = check_headers(end_to_end(head.headers, also_drop=drop))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/octet-stream"))
    # What a MoosicBox server sends shares wstund's origin (a signature link can be opened in a
    # browser): it runs sandboxed, with no access to this origin's cookies, storage or API.
    return untrusted_response_headers(to_bytes(headers))


async def _respond(
    hub: Hub, exchange: Exchange[int], call: Call, send: Send, hold: Callable[[], None]
) -> None:
    """Relay the sender's answer; ``hold`` keeps the head back to go out with a body that is
    already all here."""
    config = hub.config.moosicbox
    timeout = config.request_timeout
    try:
        head = await exchange.wait_head(timeout)
    except ExchangeFailed as failed:
        if failed.kind is FailKind.TIMEOUT:
            message = f"no response from the sender within {timeout:g} s"
            await send_json_error(send, 504, "sender_timeout", message)
        else:
            await send_json_error(send, 502, "sender_error", failed.failure.message)
        return
    try:
        headers = _response_headers(head, call.blocking)
    except InvalidHead as invalid:
        exchange.close(f"invalid response head: {invalid}")
        await send_json_error(send, 502, "sender_error", f"the local server's response: {invalid}")
        return
    if call.blocking:
        await _collect(hub, exchange, send, head.status, headers, hold)
        return
    if exchange.arrived:
        hold()
    await send({"type": "http.response.start", "status": head.status, "headers": headers})
    limit = BodyLimit([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
    try:
        async for chunk in exchange.body(timeout):
            await send({"type": "http.response.body", "body": limit.take(chunk), "more_body": True})
            if limit.over:
                log.warning("moosicbox request %d: longer than its Content-Length", exchange.id)
                exchange.close("the response is longer than its Content-Length")
                break
    except Truncated as cut:
        # Returning without the body's end makes Hypercorn drop the connection: the caller
        # sees a truncated body, never a short one that looks whole.
        log.info("moosicbox request %d cut: %s", exchange.id, cut.failure.message)
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _collect(
    hub: Hub,
    exchange: Exchange[int],
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    hold: Callable[[], None],
) -> None:
    """Blocking mode: the whole body first (up to max_buffered_bytes), then one answer with
    Content-Length, its head and body in one write."""
    config = hub.config.moosicbox
    cap = config.max_buffered_bytes
    try:
        body = await exchange.collect(cap, config.request_timeout)
    except TooLarge:
        await send_json_error(
            send,
            502,
            "response_too_large",
            f"the response is over moosicbox.max_buffered_bytes ({cap} bytes) in blocking"
            " mode; ask without _buffer=1 to stream it",
        )
        return
    except ExchangeFailed as failed:
        status_code = 504 if failed.kind is FailKind.TIMEOUT else 502
        error = "sender_timeout" if status_code == 504 else "sender_error"
        await send_json_error(send, status_code, error, failed.failure.message)
        return
    await send_whole(send, status, headers, body, hold=hold)
