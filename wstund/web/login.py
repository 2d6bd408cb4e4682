"""Logging a browser in to ``/admin``: the admin token is traded once for a cookie.

The login URL the daemon logs carries the token in its fragment (``/admin#admin_token=…``),
which browsers never send: the login page posts it as JSON to ``/admin/login``, removes it
from the address bar and history, and reloads ``/admin``. ``/admin?admin_token=…`` works too
(for typed URLs and old links): it answers with the cookie and a redirect to plain ``/admin``.
The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's request carries
it) and set only for ``/admin`` and ``/_api`` (never sent to tunnels, programs or downloads).
The admin page and the login page send a CSP that allows only their own nonce'd script,
``frame-ancestors 'none'`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import trio
from quart import Blueprint, Response, request

from ..config import Config
from ..hub import Hub
from .auth import ADMIN_COOKIE, ADMIN_COOKIE_PATHS, admin_access, tokens_equal
from .errors import forbidden, json_error
from .prompt import login_page
from .writes import is_json

LOGIN_PATH = "/admin/login"
LOGOUT_PATH = "/admin/logout"
LOGIN_PATHS = frozenset({LOGIN_PATH, LOGOUT_PATH})


def page_policy(nonce: str) -> str:
    """The CSP of wstund's management pages: their own nonce'd script, nothing framed."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def management_page(html: str, status: int = 200) -> Response:
    """``html`` with a fresh nonce on its scripts and the management pages' headers."""
    nonce = secrets.token_urlsafe(18)
    body = html.replace("<script>", f'<script nonce="{nonce}">')
    response = Response(body, status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = page_policy(nonce)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def admin_page(path: Path) -> Response:
    """The admin page itself (the request was checked: it carries the admin token)."""
    return management_page(await trio.Path(path).read_text(encoding="utf-8"))


def set_login_cookies(response: Response, config: Config) -> None:
    """Give the browser the admin token as cookies on the management paths."""
    max_age = config.admin.login_max_age or None
    for path in ADMIN_COOKIE_PATHS:
        response.set_cookie(
            ADMIN_COOKIE,
            config.server.admin_token,
            max_age=max_age,
            path=path,
            secure=request.scheme in ("https", "wss"),
            httponly=True,
            samesite="Strict",
        )


def admin_gate(config: Config) -> Response | None:
    """``GET /admin``: None when the request carries the admin token; a redirect that sets the
    cookie when ``?admin_token=`` is right; else the login page (401)."""
    given = request.args.get("admin_token")
    if given is not None and tokens_equal(given, config.server.admin_token):
        response = Response(b"", 303, {"Location": "/admin"})
        set_login_cookies(response, config)
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response
    if given is None and admin_access(config, request.headers, request.args):
        return None
    if not _wants_html():
        return forbidden()
    response = management_page(login_page(tried=given is not None), 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="wstun-admin"'
    return response


def _wants_html() -> bool:
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def create_blueprint(hub: Hub) -> Blueprint:
    """``POST /admin/login`` ({"token": …} → the cookie) and ``POST /admin/logout``."""
    bp = Blueprint("login", __name__)

    @bp.post(LOGIN_PATH)
    async def login() -> Response:
        if not is_json(request.headers.get("Content-Type", "")):
            return json_error(415, "unsupported_media_type", 'expected JSON {"token": str}')
        body = await request.get_json(silent=True)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not tokens_equal(token, hub.config.server.admin_token):
            return json_error(403, "forbidden", "that admin token was not accepted")
        response = Response(b"", 204)
        set_login_cookies(response, hub.config)
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.post(LOGOUT_PATH)
    async def logout() -> Response:
        response = Response(b"", 204)
        for path in ADMIN_COOKIE_PATHS:
            response.delete_cookie(ADMIN_COOKIE, path=path, httponly=True, samesite="Strict")
        return response

    return bp
