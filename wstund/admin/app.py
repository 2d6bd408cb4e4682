"""The admin app on the unix socket: the management API without tokens, /metrics, reload.

The socket's file mode and group are the access control. The ``/metrics`` and
``/_api/reload`` routes are also mounted on the public app, where they need the admin token.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..config import Config, runtime_dir
from ..hub import Hub
from ..marketplace import routes as marketplace_routes
from ..moosicbox import routes as moosicbox_routes
from ..tunnel import routes as tunnel_routes
from ..web import api
from ..web.auth import admin_access, presented_token, tokens_equal
from ..web.errors import forbidden, json_error
from . import token as admin_token
from .reload import ReloadOutcome

Reload = Callable[[], ReloadOutcome]


def _metrics_token(config: Config) -> bool:
    """Whether the request carries ``metrics.token`` (good for /metrics only)."""
    return tokens_equal(presented_token(request.headers, request.args), config.metrics.token)


def ops_blueprint(hub: Hub, reload: Reload, *, over_tcp: bool) -> Blueprint:
    """``GET /metrics`` and ``POST /_api/reload``; over TCP /metrics needs the admin token."""
    ops = Blueprint("ops", __name__)

    @ops.get("/metrics")
    async def metrics() -> Response:
        if not hub.config.metrics.enabled:
            return json_error(404, "metrics_disabled", "metrics are off (metrics.enabled)")
        if over_tcp and not _metrics_token(hub.config):
            if not hub.config.server.admin_token:
                return forbidden(
                    "/metrics over TCP needs metrics.token or server.admin_token set; "
                    "or scrape metrics.bind or the admin socket"
                )
            if not admin_access(hub.config, request.headers, request.args):
                return forbidden()
        body = generate_latest(hub.metrics.registry)
        return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

    @ops.post("/_api/reload")
    async def reload_config() -> Response:
        outcome = reload()
        response = jsonify(outcome.as_json())
        response.status_code = 400 if outcome.errors else 200
        return response

    return ops


def create_admin_app(
    hub: Hub, reload: Reload, public_base: Callable[[], str] = lambda: ""
) -> QuartTrio:
    """The app served on the admin unix socket: whoever can open the socket may manage."""
    app = QuartTrio("wstund-admin", static_folder=None)
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.register_blueprint(api.create_blueprint(hub))
    app.register_blueprint(ops_blueprint(hub, reload, over_tcp=False))
    app.register_blueprint(marketplace_routes.create_blueprint(hub, trusted=True))
    app.register_blueprint(tunnel_routes.create_blueprint(hub))
    app.register_blueprint(moosicbox_routes.create_blueprint(hub))

    @app.get("/_api/admin/token")
    async def show_admin_token() -> Response:
        # Only here, never on the public app: the socket's owner and group are who may see it.
        token = hub.config.server.admin_token
        url = admin_token.login_url(public_base(), token, hub.config.admin.host)
        return jsonify({"token": token, "url": url})

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        name = (error.name or "error").lower().replace(" ", "_")
        return json_error(code, name, error.description or name)

    return app


def socket_path(config: Config) -> Path:
    """Where the admin socket is: ``admin.socket`` or the runtime directory's admin.sock."""
    return Path(config.admin.socket) if config.admin.socket else runtime_dir() / "admin.sock"


def secure_socket(path: Path, config: Config) -> None:
    """Apply ``admin.mode`` and ``admin.group`` to the socket file."""
    if config.admin.group:
        shutil.chown(path, group=config.admin.group)
    os.chmod(path, int(config.admin.mode, 8))
