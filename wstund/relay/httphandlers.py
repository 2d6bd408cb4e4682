"""Relay messages that answer HTTP requests: they feed the HTTP relay engine and
are never forwarded as room traffic.

``http_response_start`` / ``http_response_chunk`` / ``http_response`` come from whoever the
server asked (``file_request`` or ``http_request``), keyed by ``request_id``; binary frames
(``binframe``) are the raw-bytes form of the chunks. ``register`` makes a connection the
program behind ``/{name}/…``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..httpheaders import InvalidHead, check_status
from ..hub import Hub
from . import binframe, protocol
from .httprelay import Exchange, Program, RelayFailure, clean_headers
from .peer import Peer
from .protocol import Envelope, ProtocolError
from .services import RESERVED_NAMES

UNKNOWN_REQUEST = "unknown_request"
NAME_TAKEN = "name_taken"
INVALID_NAME = "invalid_name"
PROGRAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ResponseStart(msgspec.Struct, frozen=True):
    request_id: str
    status: int = 200
    headers: dict[str, Any] = {}


class ResponseChunk(msgspec.Struct, frozen=True):
    request_id: str
    chunk_base64: str | None = None
    error: str | None = None
    done: bool = False


class WholeResponse(msgspec.Struct, frozen=True):
    request_id: str
    status: int = 200
    headers: dict[str, Any] = {}
    body: str | None = None
    bodyBase64: str | None = None  # noqa: N815 - wire name
    body_base64: str | None = None


class Register(msgspec.Struct, frozen=True):
    name: str
    type: str = ""
    description: str = ""
    endpoints: list[Any] = []
    static_resources: Any = None
    auth_token: str | None = None


def _b64(text: str, msg_id: protocol.MessageId | None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(protocol.INVALID_PAYLOAD, "invalid base64 body", msg_id) from None


def _start(
    hub: Hub,
    peer: Peer,
    request_id: str,
    status: int,
    headers: dict[str, Any],
    msg_id: protocol.MessageId | None,
    *,
    whole: bool = False,
) -> Exchange:
    """Give the caller the owner's head. A head that cannot be given fails the request (502)
    and answers the owner with invalid_payload; ``whole``: the body's length is ours to set."""
    exchange = hub.http_relay.find(peer, request_id)
    if exchange is None:
        raise ProtocolError(UNKNOWN_REQUEST, f"no pending request {request_id!r} for you", msg_id)
    try:
        check_status(status)
        cleaned = clean_headers(headers, ("content-length",) if whole else ())
    except InvalidHead as invalid:
        exchange.fail(f"invalid response head: {invalid}")
        exchange.abort_owner("invalid response head")
        raise ProtocolError(protocol.INVALID_PAYLOAD, str(invalid), msg_id) from None
    try:
        exchange.start(status, cleaned)
    except RelayFailure as failure:
        raise ProtocolError(protocol.INVALID_MESSAGE, failure.message, msg_id) from None
    return exchange


async def _response_start(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    start = protocol.decode_payload(envelope, ResponseStart)
    _start(hub, peer, start.request_id, start.status, start.headers, envelope.id)


async def _response_chunk(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    chunk = protocol.decode_payload(envelope, ResponseChunk)
    exchange = hub.http_relay.find(peer, chunk.request_id)
    if exchange is None:
        return  # late chunks after an abort are expected; drop them quietly
    if chunk.error is not None:
        exchange.fail(f"owner error: {chunk.error[:200]}")
        return
    if chunk.chunk_base64:
        try:
            data = _b64(chunk.chunk_base64, envelope.id)
        except ProtocolError:
            exchange.fail("invalid base64 chunk")
            raise
        await exchange.feed(data, hub.config.http_relay.chunk_timeout)
    if chunk.done:
        exchange.end()


async def _whole_response(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    response = protocol.decode_payload(envelope, WholeResponse)
    encoded = response.bodyBase64 or response.body_base64
    try:
        data = _b64(encoded, envelope.id) if encoded else (response.body or "").encode()
    except ProtocolError:
        unanswerable = hub.http_relay.find(peer, response.request_id)
        if unanswerable is not None:
            unanswerable.fail("invalid base64 body")  # a 502 now, not a 504 later
        raise
    exchange = _start(
        hub, peer, response.request_id, response.status, response.headers, envelope.id, whole=True
    )
    await exchange.feed(data, hub.config.http_relay.chunk_timeout)
    exchange.end()


async def _register(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    request = protocol.decode_payload(envelope, Register)
    name = request.name
    problem = None
    if not PROGRAM_NAME.match(name):
        problem = (INVALID_NAME, "names are 1-63 of a-z 0-9 _ - starting with a letter or digit")
    elif name in RESERVED_NAMES or hub.services.get(name) is not None:
        problem = (INVALID_NAME, f"{name!r} is reserved or a service name")
    else:
        holder = hub.http_relay.programs.get(name)
        if holder is not None and holder.owner is not peer:
            problem = (NAME_TAKEN, f"{name!r} is registered by another connection")
    if problem is not None:
        code, message = problem
        payload = {"success": False, "error": message, "message": message, "code": code}
        peer.offer(protocol.encode("ack", payload, envelope.id))
        return
    registration = msgspec.to_builtins(request)
    registration.pop("auth_token", None)
    hub.http_relay.programs[name] = Program(name, peer, request.description, registration)
    peer.offer(
        protocol.encode(
            "ack",
            {"success": True, "message": f"registered /{name}/", "name": name},
            envelope.id,
        )
    )


async def handle_binary(hub: Hub, peer: Peer, data: bytes) -> bool:
    """Take a binary frame that answers one of ``peer``'s requests; False: it is room bytes."""
    frame = binframe.try_decode(data)
    if frame is None:
        return False
    exchange = hub.http_relay.find(peer, frame.request_id)
    if exchange is None:
        return False
    if frame.kind == binframe.ABORT:
        reason = bytes(frame.payload[:200]).decode("utf-8", "replace")
        exchange.fail(f"owner error: {reason}")
        return True
    if frame.payload:
        await exchange.feed(bytes(frame.payload), hub.config.http_relay.chunk_timeout)
    if frame.kind == binframe.END:
        exchange.end()
    return True


_Control = Callable[[Hub, Peer, Envelope], Awaitable[None]]
# Message types owners send to answer requests; merged into the relay's control table.
CONTROL: dict[str, _Control] = {
    "http_response_start": _response_start,
    "http_response_chunk": _response_chunk,
    "http_response": _whole_response,
    "register": _register,
}
# Types only the server sends to owners.
SERVER_TYPES = frozenset({"file_request", "http_request", "http_window", "http_abort"})
