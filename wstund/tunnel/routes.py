"""REST routes for tunnel clients (``/_api/tunnel/clients``), the contract wstunctl calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, jsonify, request

from .. import closecodes
from ..web.errors import json_error
from .registry import ClientExists, InvalidClientId

if TYPE_CHECKING:
    from ..hub import Hub


def _unknown(client_id: str) -> Response:
    return json_error(404, "client_not_found", f"no tunnel client named {client_id!r}")


def create_blueprint(hub: Hub) -> Blueprint:
    """List, add, remove and rotate tunnel clients; writes need the admin token (app.py)."""
    routes = Blueprint("tunnel", __name__)

    @routes.get("/_api/tunnel/clients")
    async def list_clients() -> Response:
        tunnels = hub.tunnels
        if hub.cluster is not None:  # the clients registered on other nodes too
            await hub.cluster.clients.pull()
        return jsonify({"clients": [tunnels.describe(r) for r in tunnels.registry.all()]})

    @routes.post("/_api/tunnel/clients")
    async def add_client() -> Response:
        body = await request.get_json(force=True, silent=True)
        client_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(client_id, str):
            return json_error(400, "bad_request", 'expected a JSON object {"id": "<client id>"}')
        try:
            if hub.cluster is not None:
                secret = await hub.cluster.clients.add(client_id)
            else:
                secret = hub.tunnels.registry.add(client_id)
        except InvalidClientId:
            return json_error(
                400,
                "invalid_client_id",
                "a client id is a lowercase DNS label: [a-z0-9][a-z0-9-]{0,62}",
            )
        except ClientExists:
            return json_error(409, "client_exists", f"tunnel client {client_id!r} already exists")
        response = jsonify({"id": client_id, "secret": secret})
        response.status_code = 201
        return response

    @routes.delete("/_api/tunnel/clients/<client_id>")
    async def remove_client(client_id: str) -> Response:
        tunnels = hub.tunnels
        if hub.cluster is not None:  # Redis unreachable: 503 (web.failures)
            removed = await hub.cluster.clients.remove(client_id)
        else:
            removed = tunnels.registry.remove(client_id)
        if not removed:
            return _unknown(client_id)
        tunnels.disconnect(client_id, closecodes.KICKED, "client removed")
        return jsonify({"id": client_id, "removed": True})

    @routes.post("/_api/tunnel/clients/<client_id>/rotate")
    async def rotate_client(client_id: str) -> Response:
        tunnels = hub.tunnels
        try:
            if hub.cluster is not None:
                secret = await hub.cluster.clients.rotate(client_id)
            else:
                secret = tunnels.registry.rotate(client_id)
        except KeyError:
            return _unknown(client_id)
        tunnels.disconnect(client_id, closecodes.KICKED, "secret rotated")
        return jsonify({"id": client_id, "secret": secret})

    return routes
