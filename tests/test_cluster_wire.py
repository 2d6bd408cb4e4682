"""The node-to-node codec, without sockets: what one node publishes another decodes alike."""

from __future__ import annotations

import msgspec
import pytest

from wstund.cluster import wire


def test_every_operation_round_trips_with_frames_kept_apart() -> None:
    builder = wire.BatchBuilder("a")
    text, raw = '{"type":"chat","payload":{},"from":"bob"}', b"\x00\x01"
    ops: list[wire.Op] = [
        wire.Deliver(7, builder.frame(text)),
        wire.Deliver(8, builder.frame(text)),
        wire.FromMember("r00m", 9, builder.frame(raw)),
        wire.FromOwner("r00m", 3, ["bob", "eve"], builder.frame(text), "m1"),
        wire.Close(7, 4003, "kicked by host"),
        wire.Join(1, 9, "r00m", "chat", None, "bob"),
        wire.JoinReply(1, 9, "r00m", "bob", "Room"),
        wire.JoinReply(2, 9, "r00m", "", "", "invalid_token", "Invalid instance token"),
        wire.Leave("r00m", 9),
        wire.Reclaim(3, 4, "r00m", None, "t", "key", None),
        wire.ReclaimReply(3, 4, "r00m", "owner_connected", "busy", True),
        wire.Kick("r00m", 4, "bob", 5),
        wire.OwnerLeft("r00m", 4),
        wire.Disown("r00m", 4),
        wire.DropAgent("home"),
        wire.CloseRoom("r00m", "closed_by_admin"),
    ]
    builder.ops.extend(ops)
    batch = wire.decode(wire.encode(builder.build()))
    assert batch.node == "a"
    assert batch.frames == [text, raw]  # the text frame once, though two members get it
    assert isinstance(batch.frames[0], str) and isinstance(batch.frames[1], bytes)
    assert batch.ops == ops


def test_garbage_is_refused() -> None:
    with pytest.raises(msgspec.DecodeError):
        wire.decode(b"\x93\xa1a\x90\x91\x92\xa1?\x01")  # an unknown operation tag
    with pytest.raises(msgspec.DecodeError):
        wire.decode(b"not msgpack at all")
