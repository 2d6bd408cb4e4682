"""The MoosicBox wire codecs and packet reassembly, without sockets (bytes written from the wire
description: big-endian u64 request id, u32 packet id, u8 last, u16 status, u32 header length)."""

from __future__ import annotations

import json
import struct

import pytest

from wstund.moosicbox.wire import (
    PacketError,
    WireError,
    abort_frame,
    bearer,
    check_json,
    decode_packet,
    decode_reply,
    encode_packet,
    first,
    http_frame,
    parse_query,
    query_map,
    ws_frame,
)

BIG = 18446744073709551615  # u64 max, far past 2**53


def first_packet(rid: int, body: bytes, last: bool = True, headers: bytes = b"{}") -> bytes:
    return struct.pack(">QIBHI", rid, 1, int(last), 206, len(headers)) + headers + body


def packet(rid: int, pid: int, body: bytes, last: bool = False) -> bytes:
    return struct.pack(">QIB", rid, pid, int(last)) + body


def test_packet_one_carries_status_and_headers() -> None:
    decoded = decode_packet(first_packet(BIG, b"abc", headers=b'{"content-type":"audio/flac"}'))
    assert (decoded.request_id, decoded.packet_id, decoded.last) == (BIG, 1, True)
    assert decoded.status == 206 and decoded.headers == {"content-type": "audio/flac"}
    assert decoded.body == b"abc"
    later = decode_packet(packet(7, 3, b"\x00" * 5))
    assert (later.packet_id, later.last, later.body, later.status) == (3, False, b"\x00" * 5, None)


def test_our_encoder_matches_the_layout() -> None:
    assert encode_packet(BIG, 1, True, b"abc", 206, {}) == first_packet(BIG, b"abc")
    assert encode_packet(7, 3, False, b"xy") == packet(7, 3, b"xy")


@pytest.mark.parametrize("data", [b"", b"\x00" * 12])
def test_short_frames_are_refused(data: bytes) -> None:
    with pytest.raises(WireError) as refused:
        decode_packet(data)
    assert not isinstance(refused.value, PacketError)  # no request can be named


@pytest.mark.parametrize(
    "data",
    [
        packet(9, 1, b"\x00\xc8"),  # status, no header length
        struct.pack(">QIBHI", 9, 1, 1, 200, 50) + b"{}",  # header length past the end
        struct.pack(">QIBHI", 9, 1, 1, 200, 5) + b"{nope",  # not JSON
        struct.pack(">QIBHI", 9, 1, 1, 200, 7) + b'{"a":1}',  # a value that is not a string
        struct.pack(">QIBHI", 9, 1, 1, 42, 2) + b"{}",  # no such status
        packet(9, 0, b""),
    ],
)
def test_garbled_heads_fail_their_request(data: bytes) -> None:
    with pytest.raises(PacketError) as refused:
        decode_packet(data)
    assert refused.value.request_id == 9


def test_http_frame_fields_in_order_with_exact_ids() -> None:
    text = http_frame(
        BIG, "POST", "api/echo", {"z": "1", "a": "2"}, '{"n":123456789012345678901}', {}, None
    )
    assert text.startswith(f'{{"type":"HTTP","request_id":{BIG},"method":"POST"')
    data = json.loads(text)
    assert list(data) == ["type", "request_id", "method", "path", "query", "payload", "encoding",
                          "profile"]  # fmt: skip
    assert data["request_id"] == BIG and list(data["query"]) == ["a", "z"]
    assert data["payload"] == {"n": 123456789012345678901} and data["profile"] is None
    with_headers = json.loads(http_frame(1, "GET", "", {}, None, {"range": "bytes=0-"}, "p"))
    assert "payload" not in with_headers and with_headers["headers"] == {"range": "bytes=0-"}


def test_ws_and_abort_frames() -> None:
    assert json.loads(ws_frame(BIG, 2, '{"type":"PING"}', "master")) == {
        "type": "WS",
        "conn_id": BIG,
        "request_id": 2,
        "body": {"type": "PING"},
        "profile": "master",
    }
    assert abort_frame(BIG) == f'{{"type":"ABORT","request_id":{BIG}}}'


def test_replies() -> None:
    reply = decode_reply(f'{{"request_id":0,"body":{{"a":1}},"to_connection_ids":[{BIG}]}}')
    assert (reply.request_id, reply.body, reply.to, reply.exclude) == (0, {"a": 1}, (BIG,), None)
    for bad in ("nope", "[]", '{"body":1}', '{"request_id":-1,"body":1}',
                '{"request_id":0,"body":1,"to_connection_ids":["1"]}',
                '{"request_id":0,"body":NaN}', '{"request_id":0,"body":1e400}'):  # fmt: skip
        with pytest.raises(WireError):
            decode_reply(bad)


def test_strict_json() -> None:
    assert check_json(b'{"a": [1, 2.5, "x"]}') and check_json("12345678901234567890")
    for bad in ("NaN", "[Infinity]", "1e400", "{", "", "[1] [2]"):
        assert not check_json(bad)


def test_query_decoding_as_moosicbox() -> None:
    pairs = parse_query(b"a=1&b=x%20y+z&a=2&ClientID=c1&clientId=c2&empty")
    assert query_map(pairs) == {"ClientID": "c1", "a": "2", "b": "x y+z", "clientId": "c2",
                                "empty": ""}  # fmt: skip
    assert first(pairs, "clientId") == "c1"  # auth: the first, any case


def test_authorization_forms() -> None:
    assert bearer("tok") == "tok"
    assert bearer("Bearer tok") == "tok"
    assert bearer("bearer   tok ") == "tok"
    assert bearer(None) is None and bearer("") is None
