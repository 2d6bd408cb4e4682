"""Header rules without sockets: hop-by-hop, head checks, the latin-1 byte codec."""

from __future__ import annotations

import pytest

from wstund.httpheaders import (
    BodyLimit,
    InvalidHead,
    check_headers,
    check_status,
    end_to_end,
    from_bytes,
    to_bytes,
)


def test_end_to_end_drops_hop_by_hop_and_connection_listed() -> None:
    headers = [
        ("Connection", "close, X-Private"),
        ("X-Private", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert end_to_end(headers) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert end_to_end([("Host", "x"), ("A", "1")], also_drop=("host",)) == [("A", "1")]


@pytest.mark.parametrize("status", [200, 204, 404, 599])
def test_final_statuses_pass(status: int) -> None:
    assert check_status(status) == status


@pytest.mark.parametrize("status", [0, 99, 100, 101, 199, 600, -1])
def test_informational_and_out_of_range_statuses_are_refused(status: int) -> None:
    with pytest.raises(InvalidHead, match=str(status)):
        check_status(status)


def test_valid_headers_pass_unchanged() -> None:
    headers = [("X-A", "caf\xe9\tok"), ("Content-Length", "12"), ("x!#$%&'*+-.^_`|~", "v")]
    assert check_headers(headers) == headers


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("X-(bad)", "v", "invalid header name"),
        ("", "v", "invalid header name"),
        ("X A", "v", "invalid header name"),
        ("\xdc", "v", "invalid header name"),
        ("X-A", "line\r\nX-Injected: 1", "control character"),
        ("X-A", "nul\x00", "control character"),
        ("X-A", "del\x7f", "control character"),
        ("Content-Length", "abc", "invalid Content-Length"),
        ("content-length", "-1", "invalid Content-Length"),
    ],
)
def test_invalid_headers_are_named(name: str, value: str, says: str) -> None:
    with pytest.raises(InvalidHead, match=says):
        check_headers([("X-Fine", "1"), (name, value)])


def test_bytes_round_trip_and_non_latin1_goes_as_utf8() -> None:
    raw = [(b"X-A", b"caf\xc3\xa9"), (b"x-b", b"\xe9\xff")]
    assert to_bytes(from_bytes(raw)) == raw
    assert to_bytes(check_headers([("X-Euro", "\u20ac")])) == [(b"X-Euro", "\u20ac".encode())]
    with pytest.raises(InvalidHead):
        to_bytes(check_headers([("X-A", "bad\n")]))


def test_body_limit_cuts_at_the_declared_length() -> None:
    limit = BodyLimit([("Content-Length", "5")])
    assert [limit.take(b"abc"), limit.take(b"defg")] == [b"abc", b"de"]
    assert limit.over and limit.take(b"x") == b""
    free = BodyLimit([("X-A", "1")])
    assert free.take(b"x" * 100) == b"x" * 100 and not free.over
    with pytest.raises(InvalidHead, match="more than once"):
        check_headers([("Content-Length", "1"), ("content-length", "2")])
