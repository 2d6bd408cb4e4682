"""Header rules of the tunnel: X-Forwarded-* are added (hop-by-hop rules: ``httpheaders``)."""

from __future__ import annotations

from collections.abc import Iterable

from ..forwarded import FORWARDING_HEADERS
from ..httpheaders import end_to_end, from_bytes

# Negotiated separately on each WebSocket hop.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
BUFFER_HEADER = "x-wstun-buffer"


# Hypercorn stamps its own Date on every response; the agent's would make a second one.
RESPONSE_STAMPED = frozenset({"date"})


def forwarded_request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    client_host: str | None,
    scheme: str,
    prefix: str | None,
    websocket: bool,
) -> list[tuple[str, str]]:
    """The headers an agent should replay: end-to-end ones plus X-Forwarded-For/Proto/Host.

    All four are set by us from the effective client (``wstund.forwarded``), never passed on
    as the caller sent them: a caller could otherwise pose as any address to the local app.
    """
    headers = [(name.lower(), value) for name, value in from_bytes(raw)]
    drop = {BUFFER_HEADER, *(name.decode() for name in FORWARDING_HEADERS)}
    if websocket:
        drop |= WEBSOCKET_HANDSHAKE
    host = next((value for name, value in headers if name == "host"), None)
    result = end_to_end(headers, drop)
    if client_host:
        result.append(("x-forwarded-for", client_host))
    result.append(("x-forwarded-proto", {"ws": "http", "wss": "https"}.get(scheme, scheme)))
    if host is not None:
        result.append(("x-forwarded-host", host))
    if prefix:
        result.append(("x-forwarded-prefix", prefix))
    return result


def has_request_body(raw: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP/1.1 request carries a body (Content-Length > 0 or Transfer-Encoding)."""
    for name, value in raw:
        key = bytes(name).lower()
        if key == b"transfer-encoding":
            return True
        if key == b"content-length":
            return bytes(value).strip() not in (b"0", b"")
    return False
