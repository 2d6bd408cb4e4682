"""Checks on state-changing management requests that a browser could be tricked into sending.

A page on another origin (or sandboxed content, whose origin is ``null``) can make a browser
send a "simple" request: a form post or a ``fetch`` with ``text/plain``, which carries the
login cookie and needs no CORS preflight. A management write therefore must be non-simple,
a JSON body (``Content-Type: application/json``) or, without a body, a header a page cannot
add without a preflight (``X-Admin-Token``, ``Authorization``, ``X-Requested-With``), and its
``Origin`` (or ``Sec-Fetch-Site``) must be this server or one of ``server.allowed_origins``.
Clients that are not browsers send neither header and pass on their token alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from quart import Response

from .auth import HeaderLookup
from .errors import json_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NON_SIMPLE_HEADERS = ("X-Admin-Token", "Authorization", "X-Requested-With")
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON (``application/json`` or ``…+json``)."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def origin_refusal(
    headers: HeaderLookup, own_origin: str, allowed: Sequence[str]
) -> Response | None:
    """403 when a browser says the request comes from another origin than ``own_origin``."""
    origin = headers.get("Origin")
    if origin is not None:
        if origin == own_origin or origin in allowed:
            return None
        return json_error(
            403,
            "origin_not_allowed",
            f"management writes from origin {origin[:100]!r} are refused "
            "(server.allowed_origins lists the others allowed)",
        )
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in SAME_ORIGIN_SITES:
        return json_error(403, "origin_not_allowed", f"cross-site management write ({site})")
    return None


def simple_request_refusal(headers: HeaderLookup) -> Response | None:
    """415 for a body that is not JSON, or a bodiless write without a non-simple header."""
    content_type = headers.get("Content-Type")
    if content_type:
        if is_json(content_type):
            return None
        return json_error(
            415,
            "unsupported_media_type",
            f"management writes take Content-Type: application/json, not {content_type[:80]!r}",
        )
    if any(headers.get(name) for name in NON_SIMPLE_HEADERS):
        return None
    return json_error(
        415,
        "unsupported_media_type",
        "management writes take Content-Type: application/json (or, without a body, an "
        "X-Requested-With header)",
    )


def write_refusal(
    method: str, headers: HeaderLookup, own_origin: str, allowed: Sequence[str]
) -> Response | None:
    """The refusal of a state-changing request a browser may have been tricked into, if any."""
    if method in SAFE_METHODS:
        return None
    return origin_refusal(headers, own_origin, allowed) or simple_request_refusal(headers)
