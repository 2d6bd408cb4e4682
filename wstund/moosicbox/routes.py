"""REST routes for MoosicBox clients (``/_api/moosicbox/clients``), the contract wstunctl calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, jsonify, request

from .. import closecodes
from ..tunnel.registry import valid_moosicbox_id
from ..web.errors import json_error

if TYPE_CHECKING:
    from ..hub import Hub


def _unknown(client_id: str) -> Response:
    return json_error(404, "client_not_found", f"no MoosicBox client named {client_id!r}")


def create_blueprint(hub: Hub) -> Blueprint:
    """List, add, remove and rotate MoosicBox clients; writes need the admin token (app.py)."""
    routes = Blueprint("moosicbox", __name__)

    def describe(client: dict[str, Any]) -> dict[str, Any]:
        state = hub.moosicbox
        return {
            **client,
            "connected": client["id"] in state.senders,
            "app_sockets": len(state.apps.get(client["id"], {})),
        }

    @routes.get("/_api/moosicbox/clients")
    async def list_clients() -> Response:
        if hub.cluster is not None:  # the tokens issued on other nodes too
            await hub.cluster.moosicbox_tokens.pull()
        return jsonify({"clients": [describe(c) for c in hub.moosicbox.tokens.clients()]})

    @routes.post("/_api/moosicbox/clients")
    async def add_client() -> Response:
        body = await request.get_json(force=True, silent=True)
        client_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(client_id, str):
            return json_error(400, "bad_request", 'expected a JSON object {"id": "<client id>"}')
        if not valid_moosicbox_id(client_id):
            return json_error(
                400, "invalid_client_id", "a client id is [A-Za-z0-9][A-Za-z0-9._-]{0,127}"
            )
        tokens = hub.moosicbox.tokens
        if hub.cluster is not None:  # Redis unreachable: 503 (web.failures)
            shared = hub.cluster.moosicbox_tokens
            exists = await shared.exists(client_id) or tokens.exists(client_id)
            token = None if exists else await shared.mint("access", client_id)
        else:
            exists = tokens.exists(client_id)
            token = None if exists else tokens.mint("access", client_id)
        if token is None:
            return json_error(
                409, "client_exists", f"MoosicBox client {client_id!r} exists; rotate its token"
            )
        response = jsonify({"id": client_id, "token": token})
        response.status_code = 201
        return response

    @routes.delete("/_api/moosicbox/clients/<client_id>")
    async def remove_client(client_id: str) -> Response:
        if hub.cluster is not None:
            removed = await hub.cluster.moosicbox_tokens.remove(client_id)
        else:
            removed = hub.moosicbox.tokens.remove(client_id)
        if not removed:
            return _unknown(client_id)
        hub.moosicbox.disconnect(client_id, closecodes.KICKED, "client removed")
        return jsonify({"id": client_id, "removed": True})

    @routes.post("/_api/moosicbox/clients/<client_id>/rotate")
    async def rotate_client(client_id: str) -> Response:
        try:
            if hub.cluster is not None:
                token = await hub.cluster.moosicbox_tokens.rotate(client_id)
            else:
                token = hub.moosicbox.tokens.rotate(client_id)
        except KeyError:
            return _unknown(client_id)
        hub.moosicbox.disconnect(client_id, closecodes.KICKED, "tokens rotated")
        return jsonify({"id": client_id, "token": token})

    return routes
