"""JSON error responses: every refusal has a status, a stable ``error`` code and a message."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify

from ..clip import clip


def json_error(status: int, error: str, message: str, **extra: Any) -> Response:
    """A JSON error body ``{"error": code, "message": text, ...}`` with ``status``; the
    message is clipped, as it may quote the refused input."""
    response = jsonify({"error": error, "message": clip(message), **extra})
    response.status_code = status
    return response


def unauthorized(message: str = "a valid server token is required") -> Response:
    """401 with the ``WWW-Authenticate`` challenge that HTTP defines."""
    response = json_error(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="wstun"'
    return response


def forbidden(message: str = "a valid admin token is required") -> Response:
    """403 for management requests without the admin token."""
    response = json_error(403, "forbidden", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="wstun-admin"'
    return response


def misdirected(message: str) -> Response:
    """421: the request is for a path this host name does not serve (``admin.host``)."""
    return json_error(421, "misdirected_request", message)
