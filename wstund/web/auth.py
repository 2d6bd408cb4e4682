"""Server and admin tokens on HTTP requests and WebSocket upgrades."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from werkzeug.datastructures import Headers
from werkzeug.http import parse_cookie

from ..config import Config

HeaderLookup = Mapping[str, str] | Headers

# Paths anyone may fetch even when a server token is set (/metrics checks its own tokens).
PUBLIC_PATHS = frozenset({"/libwstun.js", "/health", "/ready", "/metrics"})
# The cookie a browser gets for the admin token at login (web.login): HttpOnly, SameSite=Strict,
# and only on the management paths, so it never reaches a tunnel, a program or a download.
ADMIN_COOKIE = "wstun_admin"
ADMIN_COOKIE_PATHS = ("/admin", "/_api")


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


def admin_cookie(headers: HeaderLookup) -> str | None:
    """The admin token in the login cookie, if the request carries it."""
    return parse_cookie(headers.get("Cookie", "")).get(ADMIN_COOKIE) or None


def presented_admin_token(headers: HeaderLookup, args: Mapping[str, str]) -> str | None:
    """The admin token: ``X-Admin-Token``, the bearer token, or the login cookie. Never the
    query string: a token in a URL ends up in logs, history and Referer headers."""
    return headers.get("X-Admin-Token") or presented_token(headers, {}) or admin_cookie(headers)


def server_access(config: Config, headers: HeaderLookup, args: Mapping[str, str]) -> bool:
    """Whether a request may use the server: no server token set, or it (or the admin token)."""
    expected = config.server.token
    if not expected:
        return True
    token = presented_token(headers, args)
    return tokens_equal(token, expected) or admin_access(config, headers, args)


def admin_access(config: Config, headers: HeaderLookup, args: Mapping[str, str]) -> bool:
    """Whether a request presents the admin token (an empty one, as in a config never given
    to a daemon, matches nothing: the daemon always has one, admin.token)."""
    return tokens_equal(presented_admin_token(headers, args), config.server.admin_token)


def is_admin_host(host: str | None, config: Config) -> bool:
    """Whether a request's ``Host`` is ``admin.host`` (its port compared only when the setting
    names one); always true when ``admin.host`` is empty (management on every host)."""
    wanted = config.admin.host.lower()
    if not wanted:
        return True
    host = (host or "").lower()
    if ":" not in wanted.rsplit("]", 1)[-1]:
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host == wanted
