"""The WSTun relay envelope, sans-I/O: decode frames, validate payloads, encode replies.

Wire format: every text frame is ``{"type", "id"?, "service"?, "payload"?}``.
The payload stays raw until a handler needs its fields, so forwarded frames are never
re-encoded: the original text is what members receive.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ..clip import ID_ECHO_LIMIT, clip

# Stable error codes carried in ``error`` messages (payload.code).
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
INVALID_PAYLOAD = "invalid_payload"
UNKNOWN_TYPE = "unknown_type"
NOT_JOINED = "not_joined"
ALREADY_JOINED = "already_joined"
SERVICE_REQUIRED = "service_required"
SERVICE_NOT_FOUND = "service_not_found"
SERVICE_DISABLED = "service_disabled"
SERVICE_MISMATCH = "service_mismatch"
INSTANCE_NOT_FOUND = "instance_not_found"
INSTANCE_REQUIRED = "instance_required"
INVALID_TOKEN = "invalid_token"
INVALID_SERVER_TOKEN = "invalid_server_token"
OWNER_AWAY = "owner_away"
OWNER_CONNECTED = "owner_connected"
USER_ID_TAKEN = "user_id_taken"
USER_NOT_FOUND = "user_not_found"
NOT_OWNER = "not_owner"
ROOM_FULL = "room_full"
TOO_MANY_ROOMS = "too_many_rooms"
TOO_MANY_CONNECTIONS = "too_many_connections"
RATE_LIMITED = "rate_limited"
HOST_BUSY = "host_busy"
TOO_MANY_INVALID = "too_many_invalid_messages"

# Control messages the server handles itself; every other type is room traffic.
CREATE_INSTANCE = "create_instance"
RECLAIM_INSTANCE = "reclaim_instance"
JOIN_INSTANCE = "join_instance"
LIST_INSTANCES = "list_instances"
KICK_CLIENT = "kick_client"
PING = "ping"
CONTROL_TYPES = frozenset(
    {CREATE_INSTANCE, RECLAIM_INSTANCE, JOIN_INSTANCE, LIST_INSTANCES, KICK_CLIENT, PING}
)
# Types only the server sends; a client sending them is refused, never forwarded.
SERVER_TYPES = frozenset(
    {
        "instance_created",
        "instance_reclaimed",
        "ack",
        "instance_list",
        "client_connected",
        "client_disconnected",
        "instance_destroyed",
        "service_disabled",
        "kick",
        "error",
        "pong",
        "owner_disconnected",
        "owner_reconnected",
    }
)

MessageId = str | int


class ProtocolError(Exception):
    """A frame the server refuses; becomes an ``error`` message with ``code``."""

    def __init__(self, code: str, message: str, msg_id: MessageId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id


class Envelope(msgspec.Struct, frozen=True):
    """A decoded frame; ``payload`` is left as raw JSON until a handler asks for it."""

    type: str
    id: MessageId | None = None
    service: str | None = None
    payload: msgspec.Raw = msgspec.Raw(b"null")


class CreateInstance(msgspec.Struct, frozen=True):
    name: str = "Room"
    token: str | None = None
    server_token: str | None = None


class ReclaimInstance(msgspec.Struct, frozen=True):
    uuid: str
    token: str | None = None
    server_token: str | None = None
    ownerKey: str | None = None  # noqa: N815 - wire name; the proof from instance_created


class JoinInstance(msgspec.Struct, frozen=True):
    uuid: str
    userId: str | None = None  # noqa: N815 - wire name
    token: str | None = None


class KickClient(msgspec.Struct, frozen=True):
    userId: str  # noqa: N815 - wire name
    instanceUuid: str | None = None  # noqa: N815 - wire name


class Routing(msgspec.Struct, frozen=True):
    """The only payload fields the server reads on room traffic."""

    to: str | list[str] | None = None
    instanceUuid: str | None = None  # noqa: N815 - wire name


_envelope_decoder = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()
P = TypeVar("P", bound=msgspec.Struct)
_payload_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode_envelope(text: str) -> Envelope:
    """Decode one text frame, raising ProtocolError for bad JSON or a bad envelope."""
    try:
        return _envelope_decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise ProtocolError(INVALID_MESSAGE, f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(INVALID_JSON, f"invalid JSON: {exc}") from None
    except RecursionError:  # msgspec's nesting limit, not a bug of ours
        raise ProtocolError(INVALID_JSON, "invalid JSON: nested too deeply") from None


def decode_payload(envelope: Envelope, kind: type[P]) -> P:
    """Decode the envelope's payload as ``kind``; a missing or null payload means ``{}``."""
    raw = bytes(envelope.payload)
    if raw in (b"", b"null"):
        raw = b"{}"
    decoder = _payload_decoders.get(kind)
    if decoder is None:
        decoder = _payload_decoders[kind] = msgspec.json.Decoder(kind)
    try:
        result: P = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            INVALID_PAYLOAD, f"invalid {envelope.type} payload: {exc}", envelope.id
        ) from None
    return result


def encode(type_: str, payload: dict[str, Any], msg_id: MessageId | None = None) -> str:
    """Encode a server message; ``id`` is echoed when the request carried one."""
    message: dict[str, Any] = {"type": type_, "payload": payload}
    if msg_id is not None:
        message["id"] = msg_id
    return _encoder.encode(message).decode()


def encode_error(code: str, message: str, msg_id: MessageId | None = None) -> str:
    """Encode an ``error`` message: reference fields ``message``/``error`` plus a stable code.

    The message is clipped (it may quote the refused input), and an id too long to be a
    correlation id is not echoed.
    """
    if isinstance(msg_id, str) and len(msg_id) > ID_ECHO_LIMIT:
        msg_id = None
    message = clip(message)
    return encode("error", {"message": message, "error": message, "code": code}, msg_id)


def stamp_sender(text: str, sender: str | None) -> str:
    """Add the server's ``from`` (a member's user id; null: the room's host) to a room frame.

    The frame is a JSON object (its envelope decoded), so the field goes before its closing
    brace without re-encoding the rest. Being last, it wins over any ``from`` the sender wrote:
    JSON parsers keep the last of duplicate names.
    """
    body = text.rstrip()
    return f'{body[:-1]},"from":{_encoder.encode(sender).decode()}}}'


def recipients(to: str | list[str] | None) -> list[str] | None:
    """Normalise ``payload.to`` into a list of user ids (None: everyone)."""
    if to is None:
        return None
    return [to] if isinstance(to, str) else list(to)
