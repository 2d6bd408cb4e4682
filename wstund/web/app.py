"""The public Quart-Trio app: pages, REST API and the relay WebSocket on one event loop."""

from __future__ import annotations

import logging

from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..hub import Hub
from ..marketplace import routes as marketplace_routes
from ..moosicbox import routes as moosicbox_routes
from ..relay import endpoint
from ..tunnel import routes as tunnel_routes
from . import api, login, pages, relayhttp
from .auth import PUBLIC_PATHS, admin_access, is_admin_host, server_access
from .errors import forbidden, json_error, misdirected, unauthorized
from .writes import write_refusal

log = logging.getLogger("wstund.web")
RELAY_PATHS = ("/ws", "/websocket")


# Reads that show secrets or fetch from elsewhere: the admin token, like every write.
ADMIN_READS = ("/_api/tunnel/clients",)


def _is_management(method: str, path: str) -> bool:
    """Management requests need the admin token (a daemon always has one: admin.token)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return path.startswith(ADMIN_READS)
    return path.startswith("/_api/") or "/service/api/" in path


def _own_origin() -> str:
    """This request's own origin, as a browser's ``Origin`` header would name it."""
    return f"{request.scheme}://{request.host}"


def create_app(hub: Hub) -> QuartTrio:
    """Build the public app around ``hub``."""
    app = QuartTrio("wstund", static_folder=None)
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 60
    # Files say their own cache policy (web.pages.send_static); no 12 h Expires by default.
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = None
    app.config["MAX_CONTENT_LENGTH"] = hub.config.relay.max_message_size
    app.register_blueprint(api.create_blueprint(hub))
    app.register_blueprint(marketplace_routes.create_blueprint(hub))
    app.register_blueprint(relayhttp.create_blueprint(hub))
    app.register_blueprint(pages.create_blueprint(hub))
    app.register_blueprint(tunnel_routes.create_blueprint(hub))
    app.register_blueprint(moosicbox_routes.create_blueprint(hub))
    app.register_blueprint(login.create_blueprint(hub))

    @app.before_request
    async def check_tokens() -> Response | None:
        config = hub.config
        path, method, headers = request.path, request.method, request.headers
        if path in PUBLIC_PATHS or pages.is_public_asset(hub, path):
            return None
        login_path = path in login.LOGIN_PATHS  # it checks the admin token it is given itself
        management = _is_management(method, path)
        if (path == "/admin" or login_path or management) and not is_admin_host(
            request.host, config
        ):
            return misdirected(f"management is served at host {config.admin.host!r} only")
        if path == "/admin":
            return login.admin_gate(config)
        if not login_path and not server_access(config, headers, request.args):
            return unauthorized()
        if management and not admin_access(config, headers, request.args):
            return forbidden()
        if management or login_path:
            return write_refusal(method, headers, _own_origin(), config.server.allowed_origins)
        return None

    @app.after_request
    async def no_sniffing(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        name = (error.name or "error").lower().replace(" ", "_")
        return json_error(code, name, error.description or name)

    async def relay_socket() -> Response | None:
        if not server_access(hub.config, websocket.headers, websocket.args):
            return unauthorized()
        origins = hub.config.server.allowed_origins
        origin = websocket.headers.get("Origin")
        if origins and origin is not None and origin not in origins:
            await websocket.accept()
            await websocket.close(1008, "origin not allowed")
            return None
        await endpoint.serve_socket(hub, websocket, websocket.remote_addr or "unknown")
        return None

    for path in RELAY_PATHS:
        app.add_websocket(path, endpoint=f"relay{path.replace('/', '_')}", view_func=relay_socket)
    return app
