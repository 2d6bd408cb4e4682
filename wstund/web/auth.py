"""Server and admin tokens on HTTP requests and WebSocket upgrades (DESIGN 3.7)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from werkzeug.datastructures import Headers

from ..config import Config

HeaderLookup = Mapping[str, str] | Headers

# Paths anyone may fetch even when a server token is set (/metrics checks its own tokens).
PUBLIC_PATHS = frozenset({"/libwstun.js", "/health", "/ready", "/metrics"})


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty expected token never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def presented_token(headers: HeaderLookup, args: Mapping[str, str]) -> str | None:
    """The token a request carries: ``Authorization: Bearer …`` or ``?token=``."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return args.get("token")


def presented_admin_token(headers: HeaderLookup, args: Mapping[str, str]) -> str | None:
    """The admin token: ``X-Admin-Token``, ``?admin_token=``, or the bearer token."""
    return headers.get("X-Admin-Token") or args.get("admin_token") or presented_token(headers, args)


def server_access(config: Config, headers: HeaderLookup, args: Mapping[str, str]) -> bool:
    """Whether a request may use the server: no server token set, or it (or the admin token)."""
    expected = config.server.token
    if not expected:
        return True
    token = presented_token(headers, args)
    return tokens_equal(token, expected) or tokens_equal(
        presented_admin_token(headers, args), config.server.admin_token
    )


def admin_access(config: Config, headers: HeaderLookup, args: Mapping[str, str]) -> bool:
    """Whether a request may manage the server: no admin token set, or it is presented."""
    expected = config.server.admin_token
    if not expected:
        return True
    return tokens_equal(presented_admin_token(headers, args), expected)
