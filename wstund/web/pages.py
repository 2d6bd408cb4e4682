"""HTML pages and static files: ``/``, ``/admin``, ``/libwstun.js``, ``/static/…``, and per
service ``/{svc}/service`` (host page), ``/{svc}/main`` (user page) and the other files of the
service's root (``/{svc}/chat.js``). Paths of a registered program go to that program.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath

import trio
from quart import Blueprint, Response, request

from ..cluster.relayhttp import program_elsewhere
from ..hub import Hub
from ..marketplace import routes as marketplace_routes
from ..relay.services import static_root
from . import login
from .errors import json_error
from .files import send_static
from .relayhttp import forward_to_program

PAGE_FILES = {"service": "service.html", "main": "main.html"}
# Files of a service root anyone may fetch (code and styles, never data), like /libwstun.js.
ASSET_SUFFIXES = frozenset({".js", ".css", ".svg", ".png", ".ico", ".woff2", ".webp"})
PROGRAM_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
mimetypes.add_type("text/javascript", ".js")


def safe_child(root: Path, relative: str) -> Path | None:
    """``root/relative`` if ``relative`` is a plain relative path inside ``root``, else None."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return None
    return root.joinpath(*parts)


def is_public_asset(hub: Hub, path: str) -> bool:
    """Whether ``path`` is shipped code or style that needs no token (``/static/…`` or an asset
    of a service root): pages load these as sub-resources, which carry no ``?token=``."""
    if path.startswith("/static/"):
        return PurePosixPath(path).suffix in ASSET_SUFFIXES
    parts = path.strip("/").split("/", 1)
    # Only files directly in the service root: deeper paths (downloads, programs) stay guarded.
    if len(parts) != 2 or "/" in parts[1] or PurePosixPath(parts[1]).suffix not in ASSET_SUFFIXES:
        return False
    service = hub.services.get(parts[0])
    return service is not None and service.root is not None


async def _file(path: Path, *, cache_seconds: int | None = None) -> Response:
    if not await trio.Path(path).is_file():
        return json_error(404, "not_found", f"{path.name} is not installed")
    return await send_static(path, cache_seconds=cache_seconds)


def create_blueprint(hub: Hub) -> Blueprint:
    """Page routes; service pages come from each service's root directory."""
    pages = Blueprint("pages", __name__)
    root = static_root()

    @pages.get("/")
    async def index() -> Response:
        return await _file(root / "index.html")

    @pages.get("/admin")
    async def admin() -> Response:
        return await login.admin_page(root / "admin.html")

    @pages.get("/libwstun.js")
    async def libwstun() -> Response:
        return await _file(root / "libwstun.js", cache_seconds=3600)

    @pages.get("/static/<path:name>")
    async def common(name: str) -> Response:
        path = safe_child(root / "common", name)
        if path is None or path.suffix not in ASSET_SUFFIXES:
            return json_error(404, "not_found", f"no file /static/{name}")
        return await _file(path)

    @pages.route("/<svc>", methods=PROGRAM_METHODS)
    async def service_root(svc: str) -> Response:
        return await service_path(svc, "")

    @pages.route("/<svc>/<path:rest>", methods=PROGRAM_METHODS)
    async def service_path(svc: str, rest: str) -> Response:
        program = hub.http_relay.programs.get(svc)
        if program is not None:
            return await forward_to_program(hub, program)
        service = hub.services.get(svc)
        if service is not None and not service.builtin:
            if request.method not in ("GET", "HEAD"):
                return json_error(405, "method_not_allowed", f"/{svc}/{rest} is a static file")
            return await marketplace_routes.serve(hub, service, rest)
        if service is None and (elsewhere := await program_elsewhere(hub)) is not None:
            return elsewhere  # a program registered on another node
        if service is None or service.root is None:
            return json_error(404, "not_found", f"nothing at /{svc}/{rest}")
        if request.method not in ("GET", "HEAD"):
            return json_error(405, "method_not_allowed", f"/{svc}/{rest} is a static file")
        path = safe_child(service.root, PAGE_FILES.get(rest, rest))
        if path is None or (rest not in PAGE_FILES and path.suffix not in ASSET_SUFFIXES):
            return json_error(404, "not_found", f"no page /{svc}/{rest}")
        if rest in PAGE_FILES and not service.enabled:
            return json_error(403, "service_disabled", f"service {svc!r} is disabled")
        return await _file(path)

    return pages
