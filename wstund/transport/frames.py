"""Server-to-client WebSocket frames, encoded once (sans-I/O).

A frame a server sends is never masked (RFC 6455 5.1), so without permessage-deflate the bytes
of one message are the same for every recipient: the relay encodes a broadcast once and writes
the same bytes object to every member's socket.
"""

from __future__ import annotations

import struct

TEXT = 0x1
BINARY = 0x2
PING = 0x9
_FIN = 0x80

Frame = str | bytes


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame of ``opcode`` carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN | opcode, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, size)
    return header + payload


def encode_message(frame: Frame) -> bytes:
    """A text (str) or binary (bytes) message as one frame."""
    if isinstance(frame, str):
        return encode_frame(TEXT, frame.encode())
    return encode_frame(BINARY, frame)


class FrameCache:
    """Encodes a message, remembering the last one: a fan-out offers the same object to every
    member in a row, so all but the first get the bytes already made."""

    __slots__ = ("_frame", "_wire", "encoded")

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._wire = b""
        self.encoded = 0  # messages encoded (not served from the cache)

    def encode(self, frame: Frame) -> bytes:
        """The wire bytes of ``frame``, encoded at most once while it is the latest."""
        if frame is not self._frame:
            self._wire = encode_message(frame)
            self._frame = frame
            self.encoded += 1
        return self._wire
