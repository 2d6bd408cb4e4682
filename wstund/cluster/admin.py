"""Admin actions on rooms held by another node: a room's details (with its members) and kicks,
asked through any node.

The node asked finds the room's node in the registry and asks it over pub/sub (``AdminAsk``);
that node acts as if asked directly and answers with the HTTP status and JSON body it would have
given (``AdminAnswer``), which the node asked returns as they are. No answer within
``cluster.request_timeout`` is 504 ``node_timeout``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from quart import Response

from ..web.errors import json_error
from . import wire

if TYPE_CHECKING:
    from ..hub import Hub
    from .node import Cluster

DESCRIBE = "describe"
KICK = "kick"


@dataclass
class _Ask:
    done: trio.Event = field(default_factory=trio.Event)
    status: int = 0
    body: bytes = b""


def act(hub: Hub, action: str, service: str, uuid: str, user_id: str) -> tuple[int, dict[str, Any]]:
    """Do an admin ``action`` on this node's rooms: the HTTP status and JSON body to answer."""
    if action == DESCRIBE:
        instance = hub.instances.get(uuid)
        if instance is None:
            return 404, {"error": "not_found", "message": f"no service or instance named {uuid!r}"}
        return 200, {**instance.describe(), "members": list(instance.members)}
    rooms = [hub.instances[uuid]] if uuid in hub.instances else []
    if not uuid:
        rooms = list(hub.instances_of(service))
    for instance in rooms:
        if hub.kick(instance, user_id, "kicked by admin"):
            return 200, {"success": True, "userId": user_id, "instanceUuid": instance.uuid}
    where = uuid or f"{service} rooms"
    return 404, {"error": "user_not_found", "message": f"no user {user_id!r} in {where}"}


class RemoteAdmin:
    """This node's admin questions to other nodes, and its answers to theirs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._asks: dict[int, _Ask] = {}
        self._ids = itertools.count(1)

    def answer(self, node: str, op: wire.AdminAsk) -> None:
        """Another node's admin acts on a room held here."""
        status, body = act(self.cluster.hub, op.action, op.service, op.uuid, op.user_id)
        self.cluster.send(node, wire.AdminAnswer(op.ask, status, json.dumps(body).encode()))

    def answered(self, op: wire.AdminAnswer) -> None:
        """The answer to one of this node's questions."""
        ask = self._asks.get(op.ask)
        if ask is not None:
            ask.status, ask.body = op.status, op.body
            ask.done.set()

    async def ask(self, node: str, action: str, service: str, uuid: str, user_id: str) -> Response:
        """Ask ``node`` to act; its answer, or 504 ``node_timeout``."""
        ask_id = next(self._ids)
        ask = self._asks[ask_id] = _Ask()
        try:
            self.cluster.send(node, wire.AdminAsk(ask_id, action, service, uuid, user_id))
            with trio.move_on_after(self.cluster.hub.config.cluster.request_timeout):
                await ask.done.wait()
        finally:
            del self._asks[ask_id]
        if not ask.done.is_set():
            return json_error(504, "node_timeout", f"node {node!r} did not answer")
        response = Response(ask.body, status=ask.status, content_type="application/json")
        return response

    async def elsewhere(
        self, action: str, service: str | None, uuid: str | None, user_id: str = ""
    ) -> Response | None:
        """Act on room ``uuid`` (or on the rooms of ``service``) held by other nodes: the first
        success, else the last node's answer; None when no other node holds such a room."""
        nodes: list[str] = []
        for entry in await self.cluster.remote_rooms():
            if uuid is not None and entry.room.get("uuid") != uuid:
                continue
            if service is not None and entry.room.get("service") != service:
                continue
            if entry.node not in nodes:
                nodes.append(entry.node)
        answer = None
        for node in nodes:
            answer = await self.ask(node, action, service or "", uuid or "", user_id)
            if answer.status_code == 200:
                break
        return answer
