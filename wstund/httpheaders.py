"""Header rules of every response wstund passes on from someone else (a relay owner's answer,
a tunnel agent's): hop-by-hop headers stay behind, and the head is checked before Hypercorn
sees it, so a bad one becomes a 502 with a reason instead of an error inside the HTTP server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 9110 7.6.1 connection-specific headers, plus the obsolete ones proxies still strip.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.1 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no CTL in a field value but HTAB


class InvalidHead(ValueError):
    """A response head that no HTTP/1.1 caller can be given as it is."""


def connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names that the ``Connection`` header declares hop-by-hop."""
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def end_to_end(
    headers: list[tuple[str, str]], also_drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones (in order; repeated headers kept)."""
    drop = HOP_BY_HOP | connection_listed(headers) | set(also_drop)
    return [(name, value) for name, value in headers if name.lower() not in drop]


def check_status(status: int) -> int:
    """``status`` if it can end a plain request (200-599); 1xx only comes from the server."""
    if not 200 <= status <= 599:
        raise InvalidHead(f"invalid response status {status} (200-599)")
    return status


def check_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` unchanged if each is valid HTTP/1.1: the name a token, no control characters
    in the value, Content-Length digits; else InvalidHead naming the header."""
    result = list(headers)
    if sum(name.lower() == "content-length" for name, _ in result) > 1:
        raise InvalidHead("Content-Length given more than once")
    for name, value in result:
        if not _TOKEN.fullmatch(name):
            raise InvalidHead(f"invalid header name {name[:60]!r}")
        if _CONTROL.search(value):
            raise InvalidHead(f"control character in the value of header {name!r}")
        if name.lower() == "content-length" and not value.strip().isdigit():
            raise InvalidHead(f"invalid Content-Length {value[:60]!r}")
    return result


def to_bytes(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers as raw bytes: latin-1, so byte for byte what ``from_bytes`` read; text outside
    latin-1 (from a client that is not ours) goes as UTF-8."""
    return [(_encode(name), _encode(value)) for name, value in headers]


def from_bytes(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Raw header bytes as text, byte for byte (latin-1): how the tunnel carries headers."""
    return [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in raw]


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


class BodyLimit:
    """A passed-on body held to the Content-Length its head declared: bytes past it are cut
    (the caller's HTTP/1.1 connection would fail on them), and ``over`` says the sender must
    be told to stop. Without a declared length everything passes."""

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        declared = [v for k, v in headers if k.lower() == "content-length"]
        self.remaining: int | None = int(declared[0].strip()) if declared else None
        self.over = False

    def take(self, chunk: bytes) -> bytes:
        """What of ``chunk`` may still go to the caller."""
        if self.remaining is None:
            return chunk
        if len(chunk) > self.remaining:
            chunk, self.over = chunk[: self.remaining], True
        self.remaining -= len(chunk)
        return chunk


# Content from someone else (relay downloads, registered programs, tunnelled apps under /_t/,
# installed marketplace pages) shares the management origin, so it runs in a sandbox without
# ``allow-same-origin``: its origin is opaque, it cannot read or write this origin's API,
# cookies or storage, nor register a service worker.
UNTRUSTED_SANDBOX = (
    "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox "
    "allow-modals allow-downloads"
)
# Response headers an untrusted answer may not give: widening a service worker's scope.
UNTRUSTED_DROPPED = frozenset({b"service-worker-allowed"})


def untrusted_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Raw (ASGI) headers of an untrusted response, of any status, made harmless to this origin:
    our CSP ``sandbox`` added whatever policies the response has (a browser enforces every
    policy, so a response's own sandbox can only add restrictions: ``sandbox allow-same-origin``
    of its own does not keep the origin), ``X-Content-Type-Options: nosniff``, no
    ``Service-Worker-Allowed``."""
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in UNTRUSTED_DROPPED and name.lower() != b"x-content-type-options"
    ]
    kept.append((b"content-security-policy", UNTRUSTED_SANDBOX.encode()))
    kept.append((b"x-content-type-options", b"nosniff"))
    return kept
