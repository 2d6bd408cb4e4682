"""Binary relay frames, sans-I/O: the raw-bytes form of response body chunks.

Layout of one WebSocket binary frame::

    byte 0        kind      0x01 CHUNK, 0x02 END, 0x03 ABORT
    byte 1        n         length of the id, 1..255
    bytes 2..2+n  id        the request id, ASCII (the ``request_id`` of the JSON messages)
    bytes 2+n..   payload   CHUNK: body bytes; END: optional last body bytes;
                            ABORT: UTF-8 reason

CHUNK is ``http_response_chunk {chunk_base64, done: false}`` without base64; END is
``{done: true}``; ABORT is ``{error, done: true}``. A binary frame that is not one of these
kinds, or names no request of the sending connection, is ordinary room traffic.
"""

from __future__ import annotations

from typing import NamedTuple

CHUNK = 0x01
END = 0x02
ABORT = 0x03
KINDS = frozenset({CHUNK, END, ABORT})
MAX_ID_LENGTH = 255


class FrameError(ValueError):
    """Bytes that do not form a binary relay frame."""


class BinaryFrame(NamedTuple):
    """One decoded frame; ``payload`` is a view into the received bytes (no copy)."""

    kind: int
    request_id: str
    payload: memoryview


def encode(kind: int, request_id: str, payload: bytes = b"") -> bytes:
    """Build one frame; raises FrameError for an unknown kind or an id that does not fit."""
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind:#04x}")
    try:
        raw_id = request_id.encode("ascii")
    except UnicodeEncodeError:
        raise FrameError("request id must be ASCII") from None
    if not 1 <= len(raw_id) <= MAX_ID_LENGTH:
        raise FrameError(f"request id must be 1..{MAX_ID_LENGTH} bytes")
    return bytes((kind, len(raw_id))) + raw_id + payload


def decode(data: bytes | bytearray | memoryview) -> BinaryFrame:
    """Split one frame into kind, id and payload; raises FrameError when malformed."""
    view = memoryview(data)
    if len(view) < 3:
        raise FrameError("frame shorter than its 3-byte minimum")
    kind, length = view[0], view[1]
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind:#04x}")
    if length == 0 or len(view) < 2 + length:
        raise FrameError("request id length out of range")
    try:
        request_id = bytes(view[2 : 2 + length]).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("request id is not ASCII") from None
    return BinaryFrame(kind, request_id, view[2 + length :])


def try_decode(data: bytes | bytearray | memoryview) -> BinaryFrame | None:
    """``decode`` that answers None instead of raising (room bytes are not frames)."""
    try:
        return decode(data)
    except FrameError:
        return None
