"""HTML pages and static files: ``/``, ``/admin``, ``/libwstun.js``, ``/{svc}/service|main``."""

from __future__ import annotations

from pathlib import Path

import trio
from quart import Blueprint, Response, send_file

from ..hub import Hub
from ..marketplace import routes as marketplace_routes
from ..relay.services import static_root
from .errors import json_error

PAGE_FILES = {"service": "service.html", "main": "main.html"}


async def _file(path: Path, *, cache_seconds: int | None = None) -> Response:
    if not await trio.Path(path).is_file():
        return json_error(404, "not_found", f"{path.name} is not installed")
    response = await send_file(path)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if cache_seconds is not None:
        response.cache_control.public = True
        response.cache_control.max_age = cache_seconds
    return response


def create_blueprint(hub: Hub) -> Blueprint:
    """Page routes; service pages come from each service's root directory."""
    pages = Blueprint("pages", __name__)
    root = static_root()

    @pages.get("/")
    async def index() -> Response:
        return await _file(root / "index.html")

    @pages.get("/admin")
    async def admin() -> Response:
        return await _file(root / "admin.html")

    @pages.get("/libwstun.js")
    async def libwstun() -> Response:
        return await _file(root / "libwstun.js", cache_seconds=3600)

    @pages.get("/<svc>/<page>")
    async def service_page(svc: str, page: str) -> Response:
        service = hub.services.get(svc)
        if service is not None and not service.builtin:
            return await marketplace_routes.serve(hub, service, page)
        if service is None or page not in PAGE_FILES or service.root is None:
            return json_error(404, "not_found", f"no page /{svc}/{page}")
        if not service.enabled:
            return json_error(403, "service_disabled", f"service {svc!r} is disabled")
        return await _file(service.root / PAGE_FILES[page])

    return pages
