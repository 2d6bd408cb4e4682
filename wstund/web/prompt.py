"""The small HTML token prompt a browser gets at ``/admin`` without a valid admin token."""

from __future__ import annotations

import html

from quart import Response, request

from .errors import forbidden, unauthorized

PROMPT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wstund admin: token required</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; background: #f4f6f8; margin: 0; }}
form {{ max-width: 360px; margin: 12vh auto; background: #fff; padding: 20px 24px;
        border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.1); }}
input {{ width: 100%; box-sizing: border-box; padding: 7px; margin: 8px 0 12px; }}
.error {{ color: #a42020; }}
</style></head>
<body><form id="token-form" method="get" action="/admin">
<h1>wstund admin</h1>
<p>{message}</p>
<label for="admin_token">{label}</label>
<input id="admin_token" name="{field}" type="password" autocomplete="current-password"
 autofocus required>
{hidden}<button type="submit">Open the admin page</button>
</form></body></html>
"""


def wants_html() -> bool:
    """Whether the client prefers HTML over JSON (a browser navigating to the page)."""
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def admin_refusal(*, server_denied: bool, admin_token_set: bool) -> Response:
    """401 with an HTML token prompt for browsers; the usual JSON 401/403 for others.

    Without an admin token configured, the server token is what the page needs (``?token=``).
    """
    if not wants_html():
        return unauthorized() if server_denied else forbidden()
    field = "admin_token" if admin_token_set else "token"
    tried = bool(request.args.get(field) or request.headers.get("Authorization"))
    message = (
        '<span class="error">That token was not accepted.</span>'
        if tried
        else f"This page needs the server's {'admin' if admin_token_set else 'server'} token."
    )
    server_token = request.args.get("token") if admin_token_set else None
    hidden = (
        f'<input type="hidden" name="token" value="{html.escape(server_token)}">\n'
        if server_token
        else ""
    )
    label = "Admin token" if admin_token_set else "Server token"
    page = PROMPT.format(message=message, hidden=hidden, field=field, label=label)
    response = Response(page, 401, mimetype="text/html")
    response.headers["WWW-Authenticate"] = 'Bearer realm="wstun-admin"'
    response.headers["Cache-Control"] = "no-store"
    return response
