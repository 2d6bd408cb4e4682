"""Who may take a room back (reclaim_instance), sans-I/O.

A room's owner gets a random proof of ownership (``ownerKey``) in ``instance_created``; a reclaim
that presents it wins. Pages running the reference library know nothing of the proof, so a
reclaim without one is accepted only from the browser that created the room: every relay
handshake carries (or is given) a random browser key in an HttpOnly, SameSite=Strict cookie
scoped to ``/ws``, and the room remembers the key of its creator's browser. A stranger or a
member in another browser cannot present that cookie; content served on other paths (relayed
downloads, registered programs, tunnels) never receives it.
"""

from __future__ import annotations

import hmac
import re
import secrets

COOKIE_NAME = "wstun_browser"
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def new_key() -> str:
    """A fresh random key (owner proof or browser key): 192 bits, URL-safe."""
    return secrets.token_urlsafe(24)


def browser_key(cookie_header: str | None) -> str | None:
    """The browser key in a ``Cookie`` request header, or None when absent or malformed."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and _KEY_RE.fullmatch(value):
            return value
    return None


def set_cookie(key: str) -> str:
    """The ``Set-Cookie`` value that gives a browser its key, sent only back to ``/ws``."""
    return f"{COOKIE_NAME}={key}; Path=/ws; HttpOnly; SameSite=Strict"


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two keys; a missing key never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
