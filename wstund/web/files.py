"""Sending a file from disk with the daemon's one cache and sniffing policy."""

from __future__ import annotations

from pathlib import Path

from quart import Response, send_file


async def send_static(
    path: Path, *, cache_seconds: int | None = None, mimetype: str | None = None
) -> Response:
    """``path`` with an ETag (304 on a match) and one cache policy: public for ``cache_seconds``
    (Cache-Control and Expires agree), else revalidated on every use (``no-cache``)."""
    response = await send_file(
        path, mimetype=mimetype, cache_timeout=cache_seconds, conditional=True
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    if cache_seconds is not None:
        response.cache_control.public = True
    else:  # pages may sit behind the server token: no shared cache keeps them
        response.cache_control.public = False
        response.cache_control.no_cache = True
    return response
