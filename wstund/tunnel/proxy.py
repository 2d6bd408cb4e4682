"""The public side of the tunnel: one HTTP request, by path or by host, over an agent stream."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

import trio

from ..exchange import Exchange, ExchangeFailed, FailKind, TooLarge, Truncated
from ..httpheaders import (
    BodyLimit,
    InvalidHead,
    check_headers,
    check_status,
    end_to_end,
    to_bytes,
)
from ..transport.replay import write_hold
from .asgi import (
    Message,
    Receive,
    Scope,
    Send,
    hangup_scope,
    header,
    send_json_error,
    send_whole,
)
from .flow import StreamGone, frame_cost
from .frames import (
    Frame,
    Kind,
    RequestHead,
    ResponseHead,
    decode_response_head,
    encode,
    encode_request_head,
)
from .headers import (
    BUFFER_HEADER,
    RESPONSE_STAMPED,
    forwarded_request_headers,
    has_request_body,
)
from .session import SessionFull, SessionLost, Stream, TunnelSession

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("wstund.tunnel")
PREFIX = "/_t/"
BUFFER_PARAM = "_buffer"


@dataclass(frozen=True)
class Route:
    """Which client a public request is for, and how much of its raw path names the client."""

    client_id: str
    prefix: str  # "/_t/{client_id}" for path routing, "" for host routing

    def agent_path(self, scope: Scope) -> str:
        """The raw (still percent-encoded) path the agent replays."""
        raw = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        return raw[len(self.prefix) :] or "/"


def route(scope: Scope, host_suffix: str) -> Route | None:
    """The tunnel a public request is for: ``{id}.{host_suffix}`` by host, else ``/_t/{id}/``."""
    if host_suffix:
        host = (header(scope, b"host") or "").lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        label, dot, suffix = host.partition(".")
        if dot and label and suffix == host_suffix.lower().strip("."):
            return Route(label, "")
    if scope["path"].startswith(PREFIX):
        client_id = scope["path"][len(PREFIX) :].partition("/")[0]
        return Route(client_id, PREFIX + client_id)
    return None


class Refusal(Exception):
    """A request the tunnel cannot carry: the HTTP status and JSON error to answer with."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def open_stream(hub: Hub, client_id: str, http: bool = False) -> tuple[TunnelSession, Stream]:
    """The connected session of ``client_id`` and a new stream on it (``http``: its response
    through the exchange engine); Refusal otherwise."""
    tunnels = hub.tunnels
    if tunnels.registry.get(client_id) is None:
        raise Refusal(404, "client_not_found", f"no tunnel client named {client_id!r}")
    session = tunnels.sessions.get(client_id)
    if session is None:
        raise Refusal(503, "client_offline", f"tunnel client {client_id!r} is not connected")
    try:
        return session, session.open_stream(http)
    except (SessionLost, SessionFull):
        raise Refusal(
            503, "client_unavailable", f"tunnel client {client_id!r} cannot take a request now"
        ) from None


def request_head(scope: Scope, where: Route, *, websocket: bool) -> tuple[RequestHead, bool]:
    """The head the agent replays, and whether the caller asked for a buffered response."""
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    buffered = header(scope, BUFFER_HEADER.encode()) == "1"
    if BUFFER_PARAM in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        buffered = buffered or (BUFFER_PARAM, "1") in pairs
        query = urlencode([(k, v) for k, v in pairs if k != BUFFER_PARAM])
    client = scope.get("client")
    body = not websocket and has_request_body(scope["headers"])
    head = RequestHead(
        method="GET" if websocket else scope["method"],
        path=where.agent_path(scope),
        query=query,
        headers=forwarded_request_headers(
            scope["headers"],
            client_host=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            prefix=where.prefix or None,
            websocket=websocket,
        ),
        body=body,
        websocket=websocket,
        subprotocols=list(scope.get("subprotocols") or []),
    )
    return head, buffered


async def response_head(hub: Hub, stream: Stream) -> tuple[ResponseHead, int]:
    """Wait for the agent's answer head; Refusal 504 after request_timeout, 502 on failure."""
    timeout = hub.config.tunnel.request_timeout
    frame: Frame | None = None
    try:
        with trio.move_on_after(timeout if timeout > 0 else float("inf")):
            frame = await stream.next_frame()
    except SessionLost:
        raise Refusal(502, "agent_lost", "the tunnel agent went away") from None
    if frame is None:
        raise Refusal(504, "agent_timeout", f"no response head within {timeout:g} s")
    if frame.kind != Kind.HEAD:
        message = frame.payload.decode(errors="replace") or "the agent gave up the request"
        raise Refusal(502, "agent_error", message)
    try:
        return decode_response_head(frame.payload), len(frame.payload)
    except ValueError as exc:
        raise Refusal(502, "agent_error", str(exc)) from None


def response_headers(
    response: ResponseHead, drop: Iterable[str], *, upgrade: bool = False
) -> list[tuple[str, str]]:
    """The agent's end-to-end headers, checked; Refusal 502 when the status or a header could
    not be given to the caller (101 answers only an ``upgrade``)."""
    try:
        if not (upgrade and response.status == 101):
            check_status(response.status)
        return check_headers(end_to_end(response.headers, also_drop=drop))
    except InvalidHead as invalid:
        raise Refusal(502, "agent_error", f"the local app's response: {invalid}") from None


@contextmanager
def accounted(hub: Hub, session: TunnelSession, stream: Stream) -> Iterator[list[int]]:
    """Free the stream and count the request (status written into the yielded cell)."""
    started = time.monotonic()
    status = [502]
    try:
        yield status
    finally:
        session.finish(stream)
        record = session.record
        record.requests += 1
        record.last_seen, record.dirty = time.time(), True
        hub.metrics.tunnel_requests.labels(str(status[0])).inc()
        hub.metrics.tunnel_request_seconds.observe(time.monotonic() - started)


class BodyTimeout(Exception):
    """The caller sent no request-body bytes for ``tunnel.body_timeout`` seconds."""


async def _upload(
    session: TunnelSession,
    stream: Stream,
    receive: Receive,
    caller_gone: trio.CancelScope,
    body: bool,
    body_timeout: float,
) -> None:
    """Stream the caller's body as BODY frames within credit, then END; watch for a disconnect.
    BodyTimeout when the caller leaves the body idle for ``body_timeout`` seconds."""
    max_frame = session.limits.max_frame
    while True:
        message = None
        with trio.move_on_after(body_timeout if body and body_timeout > 0 else math.inf):
            message = await receive()
        if message is None:
            raise BodyTimeout()
        if message["type"] == "http.disconnect":
            caller_gone.cancel()
            return
        if not body:
            continue
        data = bytes(message.get("body", b""))
        for start in range(0, len(data), max_frame):
            chunk = data[start : start + max_frame]
            session.record.bytes_in += len(chunk)
            await stream.credit.wait()
            stream.credit.spend(frame_cost(chunk))
            await session.send(encode(Kind.BODY, stream.id, chunk))
        if not message.get("more_body", False):
            await session.send(encode(Kind.END, stream.id))
            body = False


@contextmanager
def per_address(hub: Hub, scope: Scope) -> Iterator[bool]:
    """Count a tunnelled request against its caller's address; yields False over the cap."""
    client = scope.get("client")
    address = str(client[0]) if client else ""
    counts = hub.tunnels.requests_by_address
    if counts.get(address, 0) >= hub.config.tunnel.max_requests_per_address:
        yield False
        return
    counts[address] = counts.get(address, 0) + 1
    try:
        yield True
    finally:
        counts[address] -= 1
        if not counts[address]:
            del counts[address]


async def proxy_http(hub: Hub, where: Route, scope: Scope, receive: Receive, send: Send) -> None:
    """Carry one HTTP request to the client's agent and stream (or buffer) the answer back."""
    with per_address(hub, scope) as admitted:
        if not admitted:
            cap = hub.config.tunnel.max_requests_per_address
            await send_json_error(
                send,
                429,
                "too_many_requests",
                f"over tunnel.max_requests_per_address ({cap}) tunnelled requests in flight"
                " from your address",
                headers=[(b"retry-after", b"1")],
            )
            return
        await _proxy_http(hub, where, scope, receive, send)


async def _proxy_http(hub: Hub, where: Route, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        session, stream = open_stream(hub, where.client_id, http=True)
    except Refusal as refusal:
        await send_json_error(send, refusal.status, refusal.error, refusal.message)
        return
    head, buffered = request_head(scope, where, websocket=False)
    buffered = buffered or where.client_id in hub.config.tunnel.buffered_clients
    body_timeout = hub.config.tunnel.body_timeout
    answer = Answer(send)
    lost = timed_out = False
    with hub.inflight.track(), accounted(hub, session, stream) as status:
        try:
            # Without a body to upload, the connection says when the caller hangs up: no task
            # per request waiting in receive() (a sixth of the daemon's CPU per request).
            if not head.body:
                async with hangup_scope(scope, receive):
                    await session.send(encode_request_head(stream.id, head))
                    await _respond(hub, session, stream, answer, buffered, write_hold(scope))
            else:
                with trio.CancelScope() as caller_gone:
                    async with trio.open_nursery() as nursery:
                        await session.send(encode_request_head(stream.id, head))
                        nursery.start_soon(
                            _upload, session, stream, receive, caller_gone, head.body, body_timeout
                        )
                        await _respond(hub, session, stream, answer, buffered, write_hold(scope))
                        nursery.cancel_scope.cancel()
        except* (SessionLost, StreamGone, Truncated):
            # The agent left mid-response: returning without the body's end makes Hypercorn
            # drop the connection, so the caller sees a truncated response (never a hang).
            lost = True
            log.info("tunnel %s: agent lost mid-response", where.client_id)
        except* BodyTimeout:
            timed_out = True  # the stream is freed (and aborted at the agent) on the way out
        if timed_out and not answer.status:
            message = f"no request body bytes for {body_timeout:g} s (tunnel.body_timeout)"
            await send_json_error(answer, 408, "body_timeout", message)
        # 499 (nginx's "client closed request"): the caller left before the answer was complete.
        status[0] = answer.status if answer.complete else 502 if lost else 499


class Answer:
    """The caller's ``send``, noting the status sent and whether the response is complete.

    The caller's disconnect can cancel the proxy right after the last body message, so
    completion is noted before that message is handed to Hypercorn.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif not message.get("more_body", False):
            self.complete = True
        await self._send(message)


async def exchange_head(hub: Hub, stream: Stream) -> ResponseHead:
    """An HTTP stream's response head; Refusal 504 after request_timeout, 502 on failure."""
    assert stream.exchange is not None
    timeout = hub.config.tunnel.request_timeout
    try:
        await stream.exchange.wait_head(timeout)
    except ExchangeFailed as failed:
        if failed.kind is FailKind.TIMEOUT:
            raise Refusal(504, "agent_timeout", f"no response head within {timeout:g} s") from None
        if failed.kind is FailKind.LOST:
            raise Refusal(502, "agent_lost", "the tunnel agent went away") from None
        raise Refusal(502, "agent_error", str(failed)) from None
    assert stream.response is not None
    return stream.response


async def _respond(
    hub: Hub,
    session: TunnelSession,
    stream: Stream,
    send: Send,
    buffered: bool,
    hold: Callable[[], None],
) -> None:
    """Relay the agent's answer (or a JSON error) to the caller; ``hold`` keeps the head back
    to go out with the body when the whole body is already here."""
    exchange = stream.exchange
    assert exchange is not None
    try:
        response = await exchange_head(hub, stream)
        drop = ("content-length", *RESPONSE_STAMPED) if buffered else RESPONSE_STAMPED
        headers = to_bytes(response_headers(response, drop))
    except Refusal as refusal:
        await send_json_error(send, refusal.status, refusal.error, refusal.message)
        return
    if buffered:
        await _relay_buffered(hub, session, exchange, send, response.status, headers, hold)
        return
    if exchange.arrived:  # the body is all here: it follows the head at once
        hold()
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    limit = BodyLimit(response.headers)
    # Truncated propagates when the agent goes away (or breaks the rules) before END: the
    # caller of a streamed response then sees a truncated body, as Hypercorn cuts it.
    ended = False
    async for payload in exchange.body(0):
        session.record.bytes_out += len(payload)
        body = limit.take(payload)
        ended = exchange.complete and not limit.over  # END already here: one message less
        await send({"type": "http.response.body", "body": body, "more_body": not ended})
        if limit.over:  # the rest is dropped; finishing the stream aborts it at the agent
            log.warning("tunnel stream %d: response longer than its Content-Length", stream.id)
            break
    if not ended:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay_buffered(
    hub: Hub,
    session: TunnelSession,
    exchange: Exchange[int],
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    hold: Callable[[], None],
) -> None:
    """Collect the whole body (up to tunnel.max_buffered_bytes), answer with Content-Length
    (the head held back to go out with the body)."""
    cap = hub.config.tunnel.max_buffered_bytes
    try:
        body = await exchange.collect(cap, 0)
    except TooLarge:
        await send_json_error(
            send,
            502,
            "response_too_large",
            f"the response is over tunnel.max_buffered_bytes ({cap} bytes) in buffered"
            " mode; ask without _buffer=1 to stream it",
        )
        return
    except Truncated:
        await send_json_error(send, 502, "agent_lost", "the tunnel agent went away mid-response")
        return
    session.record.bytes_out += len(body)
    await send_whole(send, status, headers, body, hold=hold)
