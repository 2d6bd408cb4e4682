"""The tunnel wire format between wstund and an agent: a sans-I/O codec.

Every request carried through one agent socket is a *stream* with a 32-bit id chosen by the
server. Stream traffic travels in binary WebSocket messages::

    [1 byte kind][4 bytes stream id, big-endian][payload]

kinds:
  HEAD    server -> agent: RequestHead (JSON); agent -> server: ResponseHead (JSON)
  BODY    body bytes (HTTP; never empty) or one binary message (WebSocket)
  END     end of the body (HTTP, empty payload; none after a head with ``body: false``) or
          close (WebSocket: u16 code + UTF-8 reason)
  ABORT   either side gives the stream up; payload: optional UTF-8 reason
  WINDOW  grant the peer more credit on this stream: u32 byte count
  ERROR   agent -> server before HEAD: the local app failed; payload: UTF-8 message
  TEXT    one text message (WebSocket only), UTF-8
  RESPONSE agent -> server, HTTP only, to a server whose hello offers ``whole_responses``: a
          whole response in one frame, HEAD + BODY + END: [u32 head length][ResponseHead JSON]
          [body, at most ``max_frame`` bytes, costing credit as a BODY would]

Session control (hello, ping, pong) travels in text messages holding a JSON object with a
``type``. Flow control: each side starts each stream with ``window`` bytes of credit in each
direction (announced in ``hello``); a BODY or TEXT frame costs max(1, len(payload)) credit; a
sender may send one while its credit is positive (so it may overdraw by at most one frame); the
receiver grants credit back with WINDOW as its consumer takes the bytes. A stalled consumer
therefore holds at most window + one frame. HEAD, END, ABORT and ERROR cost no credit, so each
counts once per stream: a second HEAD costs the agent that stream (an ABORT with the reason), and
nothing after END, ABORT or ERROR is kept. Frames of an unknown (finished) stream are ignored.
"""

from __future__ import annotations

import enum
import struct
from typing import Literal

import msgspec

HEADER = struct.Struct("!BI")
HEADER_SIZE = HEADER.size
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
MAX_STREAM_ID = 2**32 - 1


class Kind(enum.IntEnum):
    """What a binary frame carries."""

    HEAD = 1
    BODY = 2
    END = 3
    ABORT = 4
    WINDOW = 5
    ERROR = 6
    TEXT = 7
    RESPONSE = 8


class FrameError(ValueError):
    """A frame or control message that does not follow the format."""


class Frame(msgspec.Struct, frozen=True):
    """One decoded binary frame."""

    kind: Kind
    stream_id: int
    payload: bytes = b""


class RequestHead(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent needs to replay a request: the path is raw (still percent-encoded)."""

    method: str
    path: str
    query: str = ""
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)
    body: bool = False  # BODY frames then END follow (else the head is the whole request)
    websocket: bool = False
    subprotocols: list[str] = msgspec.field(default_factory=list)


class ResponseHead(msgspec.Struct, frozen=True, kw_only=True):
    """The local app's answer: 101 (with ``subprotocol``) accepts a WebSocket."""

    status: int
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)
    subprotocol: str | None = None


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag="hello", tag_field="type"):
    """Server -> agent once authenticated: the session's flow-control parameters."""

    client_id: str
    window: int
    max_frame: int  # largest HTTP body chunk in a BODY frame
    max_message: int  # largest payload of one frame the server accepts
    ping_interval: float
    idle_timeout: float
    # RESPONSE frames are welcome (an agent that does not know them ignores it; a server that
    # does not send it gets none).
    whole_responses: bool = False


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    """Either side: are you there? Answered with Pong."""


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    """Answer to Ping."""


Control = Hello | Ping | Pong
_control_decoder = msgspec.json.Decoder(Control)
_request_head_decoder = msgspec.json.Decoder(RequestHead)
_response_head_decoder = msgspec.json.Decoder(ResponseHead)
_encoder = msgspec.json.Encoder()


def encode(kind: Kind, stream_id: int, payload: bytes = b"") -> bytes:
    """One binary frame."""
    return HEADER.pack(kind, stream_id) + payload


def decode(data: bytes) -> Frame:
    """Parse one binary frame; FrameError when it is malformed."""
    if len(data) < HEADER_SIZE:
        raise FrameError(
            f"frame of {len(data)} bytes is shorter than its {HEADER_SIZE}-byte header"
        )
    kind, stream_id = HEADER.unpack_from(data)
    try:
        kind = Kind(kind)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None
    return Frame(kind, stream_id, data[HEADER_SIZE:])


def encode_request_head(stream_id: int, head: RequestHead) -> bytes:
    """A HEAD frame server -> agent."""
    return encode(Kind.HEAD, stream_id, _encoder.encode(head))


def decode_request_head(payload: bytes) -> RequestHead:
    """The RequestHead in a HEAD frame's payload."""
    try:
        return _request_head_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise FrameError(f"bad request head: {exc}") from None


def encode_response_head(stream_id: int, head: ResponseHead) -> bytes:
    """A HEAD frame agent -> server."""
    return encode(Kind.HEAD, stream_id, _encoder.encode(head))


def decode_response_head(payload: bytes) -> ResponseHead:
    """The ResponseHead in a HEAD frame's payload; the status must be 100..599."""
    try:
        head = _response_head_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise FrameError(f"bad response head: {exc}") from None
    if not 100 <= head.status <= 599:
        raise FrameError(f"bad response status {head.status}")
    return head


def encode_response(stream_id: int, head: ResponseHead, body: bytes = b"") -> bytes:
    """A RESPONSE frame agent -> server: a whole HTTP response (head, body, end) in one."""
    encoded = _encoder.encode(head)
    return encode(Kind.RESPONSE, stream_id, _U32.pack(len(encoded)) + encoded + body)


def decode_response(payload: bytes) -> tuple[ResponseHead, bytes]:
    """The ResponseHead and the body in a RESPONSE frame's payload."""
    if len(payload) < _U32.size:
        raise FrameError("response payload shorter than its 4-byte head length")
    (size,) = _U32.unpack_from(payload)
    end = _U32.size + size
    if end > len(payload):
        raise FrameError(f"response head of {size} bytes past the end of its frame")
    return decode_response_head(payload[_U32.size : end]), payload[end:]


def encode_window(stream_id: int, credit: int) -> bytes:
    """A WINDOW frame granting ``credit`` more bytes."""
    return encode(Kind.WINDOW, stream_id, _U32.pack(credit))


def decode_window(payload: bytes) -> int:
    """The credit in a WINDOW frame's payload."""
    if len(payload) != _U32.size:
        raise FrameError(f"window payload of {len(payload)} bytes, expected 4")
    return int(_U32.unpack(payload)[0])


def encode_close(stream_id: int, code: int, reason: str = "") -> bytes:
    """An END frame closing a WebSocket stream with ``code``."""
    return encode(Kind.END, stream_id, _U16.pack(code) + reason.encode()[:123])


def decode_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a WebSocket END frame; an empty payload means 1000."""
    if not payload:
        return 1000, ""
    if len(payload) < _U16.size:
        raise FrameError("close payload shorter than its 2-byte code")
    return int(_U16.unpack_from(payload)[0]), payload[_U16.size :].decode(errors="replace")


def encode_text(
    stream_id: int, kind: Literal[Kind.ABORT, Kind.ERROR, Kind.TEXT], text: str
) -> bytes:
    """An ABORT, ERROR or TEXT frame carrying UTF-8 text."""
    return encode(kind, stream_id, text.encode())


def encode_control(message: Control) -> str:
    """A control message as a text WebSocket message."""
    return _encoder.encode(message).decode()


def decode_control(text: str) -> Control:
    """Parse a control text message; FrameError when it is not one."""
    try:
        message: Control = _control_decoder.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise FrameError(f"bad control message: {exc}") from None
    return message
