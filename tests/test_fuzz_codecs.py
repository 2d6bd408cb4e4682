"""Hypothesis fuzzing of the sans-I/O codecs: the relay envelope (relay/protocol.py), the binary
relay frames (relay/binframe.py) and the tunnel frames (tunnel/frames.py).

Two properties each: whatever bytes arrive, a decoder answers a value or its own error type
(never another exception, which would end a connection with a traceback), and what an encoder
builds decodes back to what it was given. Bounded (``max_examples``) and derandomized, so CI
runs the same cases every time in a few seconds.
"""

from __future__ import annotations

import json
import string
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from wstund.clip import ECHO_LIMIT
from wstund.relay import binframe, protocol
from wstund.tunnel import frames

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def deep_json(draw: st.DrawFn) -> str:
    """JSON nested deeper than a recursive parser allows, inside an object or not."""
    depth = draw(st.integers(min_value=900, max_value=5000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * depth
    return draw(st.sampled_from([inner, '{"type":"x","payload":' + inner + "}"]))


texts = st.text() | deep_json() | json_values.map(json.dumps)
envelope_dicts = st.fixed_dictionaries(
    {"type": st.text(min_size=1)},
    optional={
        "id": st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "service": st.text(),
        "payload": json_values,
    },
)


# -- relay envelope -----------------------------------------------------------------------------


@FUZZ
@given(texts)
def test_envelope_decoder_answers_an_envelope_or_a_protocol_error(text: str) -> None:
    try:
        envelope = protocol.decode_envelope(text)
    except protocol.ProtocolError as error:
        assert error.code in (protocol.INVALID_JSON, protocol.INVALID_MESSAGE)
        return
    for kind in (protocol.Routing, protocol.JoinInstance, protocol.CreateInstance):
        try:
            protocol.decode_payload(envelope, kind)
        except protocol.ProtocolError as error:
            assert error.code == protocol.INVALID_PAYLOAD


@FUZZ
@given(envelope_dicts)
def test_envelope_round_trip(message: dict[str, Any]) -> None:
    envelope = protocol.decode_envelope(json.dumps(message))
    assert envelope.type == message["type"]
    assert envelope.id == message.get("id")
    assert envelope.service == message.get("service")
    assert msgspec.json.decode(bytes(envelope.payload)) == message.get("payload")


@FUZZ
@given(st.text(min_size=1), json_values, st.none() | st.text() | st.integers(0, 2**31))
def test_encoded_server_messages_decode_back(type_: str, payload: Any, msg_id: Any) -> None:
    envelope = protocol.decode_envelope(protocol.encode(type_, {"v": payload}, msg_id))
    assert (envelope.type, envelope.id) == (type_, msg_id)
    assert msgspec.json.decode(bytes(envelope.payload)) == {"v": payload}


@FUZZ
@given(st.text(), st.text(max_size=2000), st.none() | st.text(max_size=600))
def test_error_replies_stay_small_whatever_they_quote(code: str, message: str, msg_id: Any) -> None:
    reply = json.loads(protocol.encode_error(code, message, msg_id))
    assert len(reply["payload"]["message"]) <= ECHO_LIMIT + 40
    assert reply.get("id") in (None, msg_id)


# -- binary relay frames ------------------------------------------------------------------------

ascii_ids = st.text(alphabet=string.printable, min_size=1, max_size=binframe.MAX_ID_LENGTH)


@FUZZ
@given(st.binary(max_size=600))
def test_binary_relay_frame_decoder_answers_a_frame_or_frame_error(data: bytes) -> None:
    try:
        frame = binframe.decode(data)
    except binframe.FrameError:
        assert binframe.try_decode(data) is None
        return
    assert frame.kind in binframe.KINDS and 1 <= len(frame.request_id) <= binframe.MAX_ID_LENGTH
    assert binframe.encode(frame.kind, frame.request_id, bytes(frame.payload)) == data


@FUZZ
@given(st.sampled_from(sorted(binframe.KINDS)), ascii_ids, st.binary(max_size=2000))
def test_binary_relay_frame_round_trip(kind: int, request_id: str, payload: bytes) -> None:
    frame = binframe.decode(binframe.encode(kind, request_id, payload))
    assert (frame.kind, frame.request_id, bytes(frame.payload)) == (kind, request_id, payload)


# -- tunnel frames ------------------------------------------------------------------------------

stream_ids = st.integers(min_value=0, max_value=frames.MAX_STREAM_ID)
header_pairs = st.lists(st.tuples(st.text(), st.text()), max_size=5)


@FUZZ
@given(st.binary(max_size=600))
def test_tunnel_frame_decoder_answers_a_frame_or_frame_error(data: bytes) -> None:
    try:
        frame = frames.decode(data)
    except frames.FrameError:
        return
    assert frames.encode(frame.kind, frame.stream_id, frame.payload) == data


@FUZZ
@given(st.binary(max_size=600) | deep_json().map(str.encode) | texts.map(str.encode))
def test_tunnel_payload_decoders_answer_a_value_or_frame_error(payload: bytes) -> None:
    decoders = (
        frames.decode_request_head,
        frames.decode_response_head,
        frames.decode_window,
        frames.decode_close,
        lambda p: frames.decode_control(p.decode(errors="replace")),
    )
    for decoder in decoders:
        try:
            decoder(payload)
        except frames.FrameError:
            pass


@FUZZ
@given(st.sampled_from(list(frames.Kind)), stream_ids, st.binary(max_size=2000))
def test_tunnel_frame_round_trip(kind: frames.Kind, stream_id: int, payload: bytes) -> None:
    assert frames.decode(frames.encode(kind, stream_id, payload)) == frames.Frame(
        kind, stream_id, payload
    )


@FUZZ
@given(
    stream_ids,
    st.builds(
        frames.RequestHead,
        method=st.text(min_size=1),
        path=st.text(),
        query=st.text(),
        headers=header_pairs,
        body=st.booleans(),
        websocket=st.booleans(),
        subprotocols=st.lists(st.text(), max_size=3),
    ),
    st.builds(
        frames.ResponseHead,
        status=st.integers(min_value=100, max_value=599),
        headers=header_pairs,
        subprotocol=st.none() | st.text(),
    ),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**16 - 1),
    st.text(alphabet=string.printable, max_size=123),
)
def test_tunnel_heads_windows_and_closes_round_trip(
    stream_id: int,
    request: frames.RequestHead,
    response: frames.ResponseHead,
    credit: int,
    code: int,
    reason: str,
) -> None:
    sent = frames.decode(frames.encode_request_head(stream_id, request))
    assert (sent.kind, sent.stream_id) == (frames.Kind.HEAD, stream_id)
    assert frames.decode_request_head(sent.payload) == request
    answer = frames.decode(frames.encode_response_head(stream_id, response))
    assert frames.decode_response_head(answer.payload) == response
    window = frames.decode(frames.encode_window(stream_id, credit))
    assert frames.decode_window(window.payload) == credit
    close = frames.decode(frames.encode_close(stream_id, code, reason))
    assert frames.decode_close(close.payload) == (code, reason)
