"""The MoosicBox tunnel wire, sans-I/O: the frames a MoosicBox sender reads and writes.

Server → sender: JSON text frames tagged by ``type`` (``HTTP``, ``WS``, ``ABORT``). Ids are
u64 and may exceed 2**53; Python's ``json`` writes integers exactly, so they travel as exact
JSON numbers as MoosicBox's serde does.

Sender → server: binary packets, big-endian::

    u64 request_id | u32 packet_id | u8 last | (packet 1 only: u16 status | u32 header_len |
    headers JSON) | body bytes

and JSON text replies ``{"request_id", "body", "exclude_connection_ids"?, "to_connection_ids"?}``
that the server routes to app sockets.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

PACKET_HEAD = struct.Struct(">QIB")  # request_id, packet_id, last
RESPONSE_HEAD = struct.Struct(">HI")  # status, header_len
MIN_PACKET = PACKET_HEAD.size  # 13
U64_MAX = 2**64 - 1
FORWARDED_HEADERS = ("accept", "range")  # the only request headers a sender is given
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class WireError(ValueError):
    """A frame that does not follow the MoosicBox wire."""


class PacketError(WireError):
    """A packet whose request is known but whose head is garbled (the request fails)."""

    def __init__(self, request_id: int, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Packet:
    """One binary packet of a response; ``status``/``headers`` only on packet 1."""

    request_id: int
    packet_id: int
    last: bool
    body: bytes
    status: int | None = None
    headers: dict[str, str] | None = None


def decode_packet(data: bytes) -> Packet:
    """Parse a sender's binary frame; WireError if too short to name a request, PacketError if
    its request is named but packet 1's head is truncated or its header JSON is invalid."""
    if len(data) < MIN_PACKET:
        raise WireError(f"a packet has at least {MIN_PACKET} bytes, got {len(data)}")
    request_id, packet_id, last = PACKET_HEAD.unpack_from(data)
    if packet_id == 0:
        raise PacketError(request_id, "packet ids start at 1")
    if packet_id != 1:
        return Packet(request_id, packet_id, last == 1, data[MIN_PACKET:])
    end = MIN_PACKET + RESPONSE_HEAD.size
    if len(data) < end:
        raise PacketError(request_id, "packet 1 is shorter than its status and header length")
    status, header_len = RESPONSE_HEAD.unpack_from(data, MIN_PACKET)
    if len(data) < end + header_len:
        raise PacketError(request_id, f"packet 1 announces {header_len} header bytes, has fewer")
    try:
        headers = json.loads(data[end : end + header_len])
    except ValueError:
        raise PacketError(request_id, "packet 1's headers are not JSON") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise PacketError(request_id, "packet 1's headers are not an object of strings")
    if not 100 <= status <= 999:
        raise PacketError(request_id, f"invalid status code {status}")
    return Packet(request_id, 1, last == 1, data[end + header_len :], status, headers)


def encode_packet(
    request_id: int,
    packet_id: int,
    last: bool,
    body: bytes = b"",
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A binary packet as a MoosicBox sender writes it (bench and tools; the tests write their
    own from the wire description)."""
    head = PACKET_HEAD.pack(request_id, packet_id, 1 if last else 0)
    if packet_id != 1:
        return head + body
    names = json.dumps(dict(sorted((headers or {}).items())), separators=(",", ":")).encode()
    return head + RESPONSE_HEAD.pack(status or 200, len(names)) + names + body


# -- server → sender ---------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def http_frame(
    request_id: int,
    method: str,
    path: str,
    query: Mapping[str, str],
    payload_json: str | None,
    headers: Mapping[str, str],
    profile: str | None,
) -> str:
    """The ``HTTP`` frame; ``payload_json`` is the request body's JSON text (checked by the
    caller, embedded verbatim so every number stays as the app wrote it), None when empty."""
    parts = [
        f'{{"type":"HTTP","request_id":{request_id},"method":{_json(method)}',
        f',"path":{_json(path)},"query":{_json(dict(sorted(query.items())))}',
    ]
    if payload_json is not None:
        parts.append(f',"payload":{payload_json}')
    if headers:
        parts.append(f',"headers":{_json(dict(headers))}')
    parts.append(f',"encoding":"BINARY","profile":{_json(profile)}}}')
    return "".join(parts)


def ws_frame(conn_id: int, request_id: int, body_json: str, profile: str | None) -> str:
    """The ``WS`` frame carrying an app socket's message (its JSON text, verbatim)."""
    return (
        f'{{"type":"WS","conn_id":{conn_id},"request_id":{request_id},"body":{body_json}'
        f',"profile":{_json(profile)}}}'
    )


def abort_frame(request_id: int) -> str:
    """The ``ABORT`` frame: the sender stops producing that request's packets."""
    return f'{{"type":"ABORT","request_id":{request_id}}}'


# -- sender → server text ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A sender's text frame: ``body`` for app sockets, routed by the other fields."""

    request_id: int
    body: Any
    to: tuple[int, ...] | None
    exclude: tuple[int, ...] | None


def _ids(value: Any, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_u64(v) for v in value):
        raise WireError(f"{name} is not a list of u64")
    return tuple(value)


def _is_u64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def decode_reply(text: str) -> Reply:
    """Parse a sender's JSON text reply; WireError if it is not one."""
    try:
        data = _strict(text)
    except ValueError:
        raise WireError("a sender's text frame is not JSON") from None
    if not isinstance(data, dict) or not _is_u64(data.get("request_id")) or "body" not in data:
        raise WireError("a sender's text frame needs a u64 request_id and a body")
    return Reply(
        data["request_id"],
        data["body"],
        _ids(data.get("to_connection_ids"), "to_connection_ids"),
        _ids(data.get("exclude_connection_ids"), "exclude_connection_ids"),
    )


def encode_body(body: Any) -> str:
    """What an app socket receives: the reply's ``body`` as compact JSON."""
    return _json(body)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")  # serde_json refuses it too
    return value


def _strict(text: str | bytes) -> Any:
    """Parse one JSON value as serde_json would: no NaN/Infinity, no number out of range."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def check_json(text: str | bytes) -> bool:
    """Whether ``text`` is one strict JSON value (no NaN/Infinity, as serde_json reads it)."""
    try:
        _strict(text)
    except ValueError:
        return False
    return True


# -- the caller's request ----------------------------------------------------------------------


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    """Query pairs in order, percent-decoded, ``+`` kept as ``+`` (MoosicBox's qstring)."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        pairs.append((_decode(key), _decode(value)))
    return pairs


def _decode(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", errors="replace")


def query_map(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Every parameter, the last occurrence of a repeated key winning, keys sorted."""
    return dict(sorted(dict(pairs).items()))


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name``, key compared case-insensitively (MoosicBox's auth lookup)."""
    name = name.lower()
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None


def profile_of(pairs: list[tuple[str, str]], header: str | None) -> str | None:
    """The MoosicBox profile: ``moosicboxProfile`` query (any case), else the header, else None."""
    found = first(pairs, "moosicboxProfile")
    return found if found is not None else header


def forwarded_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers a sender is given: ``accept`` and ``range`` only, lowercase."""
    kept: dict[str, str] = {}
    for name, value in headers:
        lowered = name.decode("latin-1").lower()
        if lowered in FORWARDED_HEADERS:
            kept[lowered] = value.decode("latin-1")
    return kept


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header: raw, ``Bearer x`` or ``bearer x``."""
    if authorization is None:
        return None
    value = authorization.strip()
    scheme, space, rest = value.partition(" ")
    if space and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None
