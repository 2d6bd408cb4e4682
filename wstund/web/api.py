"""The REST API for services and rooms, reference paths, JSON errors."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, jsonify, request

from ..cluster.admin import DESCRIBE, KICK
from ..hub import Hub
from ..marketplace import store as marketplace_store
from ..relay.services import Service
from .errors import json_error


def _service_json(hub: Hub, service: Service) -> dict[str, Any]:
    return service.describe(len(hub.instances_of(service.name)))


def _clients(hub: Hub, service: str) -> list[dict[str, Any]]:
    return [
        {"userId": user_id, "instanceUuid": instance.uuid, "instanceName": instance.name}
        for instance in hub.instances_of(service)
        for user_id in instance.members
    ]


async def _rooms(hub: Hub, service: str | None) -> list[dict[str, Any]]:
    """The rooms' listing entries: the cluster's when this node is in one, else this node's."""
    if hub.cluster is not None:
        return await hub.cluster.list_rooms(service)
    return [i.describe() for i in hub.instances_of(service)]


def _unknown_service(name: str) -> Response:
    return json_error(404, "service_not_found", f"no service named {name!r}")


def create_blueprint(hub: Hub) -> Blueprint:
    """Routes under ``/_api`` and ``/{svc}/service/api``; writes need the admin token."""
    api = Blueprint("api", __name__)

    @api.get("/_api/status")
    async def status() -> Response:
        body: dict[str, Any] = {
            "version": hub.version,
            "uptime": round(hub.uptime(), 3),
            "connections": hub.connection_count,
            "instances": len(hub.instances),
            "members": sum(len(i.members) for i in hub.instances.values()),
            "services": len(hub.services.all()),
        }
        if hub.cluster is not None:
            body["cluster"] = await hub.cluster.describe()
        return jsonify(body)

    @api.get("/_api/services")
    async def list_services() -> Response:
        return jsonify({"services": [_service_json(hub, s) for s in hub.services.all()]})

    @api.get("/_api/services/<name>")
    async def show_service(name: str) -> Response:
        service = hub.services.get(name)
        if service is None:
            return _unknown_service(name)
        body = _service_json(hub, service)
        body["instances"] = await _rooms(hub, name)
        return jsonify(body)

    @api.post("/_api/services/<name>/enable")
    async def enable_service(name: str) -> Response:
        return _set_enabled(name, True)

    @api.post("/_api/services/<name>/disable")
    async def disable_service(name: str) -> Response:
        return _set_enabled(name, False)

    def _set_enabled(name: str, enabled: bool) -> Response:
        service = hub.services.get(name)
        if service is None:
            return _unknown_service(name)
        marketplace_store.save_enabled(hub, service, enabled)  # refused: nothing changes
        hub.set_service_enabled(name, enabled)
        return jsonify({"success": True, "service": _service_json(hub, service)})

    @api.delete("/_api/services/<name>")
    async def remove_service(name: str) -> Response:
        service = hub.services.get(name)
        if service is None:
            return _unknown_service(name)
        if service.builtin:
            return json_error(
                400, "builtin_service", f"built-in service {name!r} cannot be removed"
            )
        if name in hub.installing:  # the update would put it back when it lands
            return json_error(
                409, "install_in_progress", f"{name!r} is being updated; remove it after"
            )
        hub.remove_service(name)
        await marketplace_store.uninstall(hub, name)
        return jsonify({"success": True, "name": name})

    @api.get("/_api/instances")
    async def list_instances() -> Response:
        return jsonify({"instances": await _rooms(hub, None)})

    @api.get("/_api/instances/<key>")
    async def service_instances(key: str) -> Response:
        if hub.services.get(key) is None:
            instance = hub.instances.get(key)
            if instance is not None:  # a room's uuid: that room and its members
                return jsonify({**instance.describe(), "members": list(instance.members)})
            if hub.cluster is not None:  # a room held by another node
                answer = await hub.cluster.admin.elsewhere(DESCRIBE, None, key)
                if answer is not None:
                    return answer
            return json_error(404, "not_found", f"no service or instance named {key!r}")
        return jsonify({"instances": await _rooms(hub, key)})

    @api.delete("/_api/instances/<uuid>")
    async def close_instance(uuid: str) -> Response:
        if not hub.close_instance(uuid, "closed_by_admin"):
            elsewhere = hub.cluster is not None and await hub.cluster.close_elsewhere(
                uuid, "closed_by_admin"
            )
            if not elsewhere:  # nor on another node of the cluster
                return json_error(404, "instance_not_found", f"no instance {uuid!r}")
        return jsonify({"success": True, "uuid": uuid})

    @api.post("/_api/instances/<uuid>/kick")
    async def kick_member(uuid: str) -> Response:
        instance = hub.instances.get(uuid)
        body = await request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str):
            return json_error(400, "invalid_request", 'expected JSON {"userId": str}')
        if instance is None and hub.cluster is not None:  # a room held by another node
            answer = await hub.cluster.admin.elsewhere(KICK, None, uuid, body["userId"])
            if answer is not None:
                return answer
        if instance is None:
            return json_error(404, "instance_not_found", f"no instance {uuid!r}")
        if not hub.kick(instance, body["userId"], "kicked by admin"):
            return json_error(404, "user_not_found", f"no user {body['userId']!r} in {uuid}")
        return jsonify({"success": True, "userId": body["userId"], "instanceUuid": uuid})

    @api.get("/<svc>/service/api/status")
    async def service_status(svc: str) -> Response:
        service = hub.services.get(svc)
        if service is None:
            return _unknown_service(svc)
        body = _service_json(hub, service)
        body["instances"] = await _rooms(hub, svc)
        body["userCount"] = sum(i["userCount"] for i in body["instances"])
        return jsonify(body)

    @api.post("/<svc>/service/api/start")
    async def service_start(svc: str) -> Response:
        return _set_enabled(svc, True)

    @api.post("/<svc>/service/api/stop")
    async def service_stop(svc: str) -> Response:
        return _set_enabled(svc, False)

    @api.get("/<svc>/service/api/clients")
    async def service_clients(svc: str) -> Response:
        if hub.services.get(svc) is None:
            return _unknown_service(svc)
        return jsonify({"clients": _clients(hub, svc)})

    @api.post("/<svc>/service/api/kick")
    async def service_kick(svc: str) -> Response:
        if hub.services.get(svc) is None:
            return _unknown_service(svc)
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str):
            return json_error(400, "invalid_request", 'expected JSON {"userId": str, ...}')
        user_id, uuid = body["userId"], body.get("instanceUuid")
        if uuid is not None and not isinstance(uuid, str):
            return json_error(400, "invalid_request", "instanceUuid must be a string")
        for instance in hub.instances_of(svc):
            if (uuid is None or instance.uuid == uuid) and hub.kick(
                instance, user_id, "kicked by admin"
            ):
                return jsonify({"success": True, "userId": user_id, "instanceUuid": instance.uuid})
        if hub.cluster is not None:  # in a room held by another node
            answer = await hub.cluster.admin.elsewhere(KICK, svc, uuid, user_id)
            if answer is not None and answer.status_code == 200:
                return answer
        return json_error(404, "user_not_found", f"no user {user_id!r} in {svc} rooms")

    return api
