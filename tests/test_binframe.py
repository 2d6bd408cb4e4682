"""The binary chunk frame codec (docs/protocol.md), without sockets."""

from __future__ import annotations

import pytest

from wstund.relay import binframe


def test_layout_is_kind_length_id_payload() -> None:
    frame = binframe.encode(binframe.CHUNK, "req1", b"\x00\xffdata")
    assert frame == b"\x01\x04req1\x00\xffdata"
    decoded = binframe.decode(frame)
    assert (decoded.kind, decoded.request_id, bytes(decoded.payload)) == (
        1,
        "req1",
        b"\x00\xffdata",
    )
    end = binframe.decode(binframe.encode(binframe.END, "r"))
    assert (end.kind, bytes(end.payload)) == (binframe.END, b"")
    abort = binframe.decode(binframe.encode(binframe.ABORT, "r", b"disk full"))
    assert abort.kind == 3 and bytes(abort.payload) == b"disk full"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x01\x00x", b"\x09\x01ab", b"\x01\x05abc", b"\x01\x01\xff", b"hello"],
)
def test_malformed_frames_are_not_frames(data: bytes) -> None:
    with pytest.raises(binframe.FrameError):
        binframe.decode(data)
    assert binframe.try_decode(data) is None


def test_encode_refuses_what_cannot_be_decoded() -> None:
    for kind, request_id in ((7, "r"), (binframe.CHUNK, ""), (binframe.CHUNK, "é"), (1, "x" * 256)):
        with pytest.raises(binframe.FrameError):
            binframe.encode(kind, request_id)
    assert binframe.decode(binframe.encode(1, "x" * 255)).request_id == "x" * 255
