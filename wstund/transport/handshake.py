"""The server side of the WebSocket opening handshake on a head already parsed (sans-I/O).

The head was read once with h11 to pick a lane; answering it here spares wsproto parsing it a
second time. The checks are wsproto's (RFC 6455 4.2.1); a head that fails them goes to
Hypercorn, which answers it as it always has.
"""

from __future__ import annotations

from http import HTTPStatus

from wsproto.extensions import Extension
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import generate_accept_token, split_comma_header

from .head import Head

VERSION = b"13"


def upgrade_key(head: Head) -> bytes | None:
    """The Sec-WebSocket-Key of a valid upgrade request, or None when it is not one."""
    key = head.header(b"sec-websocket-key")
    if (
        not head.is_websocket_upgrade
        or key is None
        or head.header(b"sec-websocket-version") != VERSION
        or head.header(b"host") is None
    ):
        return None
    return key


def accept_response(
    head: Head,
    key: bytes,
    supported: list[Extension],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> tuple[bytes, list[Extension]]:
    """The 101 response with ``extra`` headers, and the extensions it accepted among
    ``supported``."""
    headers = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + generate_accept_token(key),
        *(name + b": " + value for name, value in extra or ()),
    ]
    accepted: list[Extension] = []
    offers = [
        offer
        for name, value in head.headers
        if name == b"sec-websocket-extensions"
        for offer in split_comma_header(value)
    ]
    if offers and supported:
        answer = server_extensions_handshake(offers, supported)
        if answer is not None:
            headers.append(b"sec-websocket-extensions: " + answer)
            accepted = [ext for ext in supported if ext.enabled()]
    return b"\r\n".join(headers) + b"\r\n\r\n", accepted


def reject_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """An HTTP error answering the upgrade; the connection closes after it."""
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
