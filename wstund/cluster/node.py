"""This node's part in a cluster: its registry entries in Redis, and its pub/sub links.

A room lives on the node of its owner. Each node keeps, in Redis, a heartbeat key and one key
per room it holds (the room's listing entry and the node), all with a TTL of ``node_ttl``
refreshed every third of it, so a dead node's entries vanish by themselves. A member whose
socket is on another node joins through that node: the nodes talk over pub/sub, one channel per
node (see wire.py), and every operation from one node to another travels in order on one
connection, so frames from a sender reach each recipient in the order sent.

When Redis fails, every cross-node link is cut (members are told ``instance_destroyed`` with the
reason ``cluster_unavailable`` and closed 4004, owners get ``client_disconnected``), local rooms
keep working, cross-node joins are refused with ``cluster_unavailable``, a warning is logged
once a minute, and the node reconnects by itself.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import coredis
import httpx
import msgspec
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import closecodes
from ..relay import handlers, protocol
from ..tunnel.asgi import Receive, Scope, Send, ServerWebSocket, send_json_error
from . import wire
from .admin import RemoteAdmin
from .clients import SharedClients
from .forward import forward_http, forward_websocket, hop_allowed, hop_secret, without_hop
from .moosicbox import SharedTokens
from .publisher import FAULTS, Publisher
from .registry import (
    DELETE_IF_OURS,
    NODES,
    NodeEntry,
    RoomEntry,
    channel,
    load_node_id,
    node_key,
    node_rooms_key,
    room_key,
    sender_key,
    tunnel_key,
)
from .remote import OwnedRemoteRoom, RemoteMember, RemoteOwner, RemoteRoom

if TYPE_CHECKING:
    from ..hub import Hub
    from ..relay.instance import Instance
    from ..relay.peer import Peer

log = logging.getLogger("wstund.cluster")

CLUSTER_UNAVAILABLE = "cluster_unavailable"
NODE_GONE = "node_gone"
_WARN_EVERY = 60.0
_RETRY_DELAY = 0.5


def _user_not_found(owner: RemoteOwner, message: str, msg_id: str | int | None) -> None:
    """Answer an owner on another node as its own node would: ``error`` ``user_not_found``."""
    owner.offer(protocol.encode_error(protocol.USER_NOT_FOUND, message, msg_id))


@dataclass
class _PendingJoin:
    peer: Peer
    msg_id: protocol.MessageId | None
    done: trio.Event = field(default_factory=trio.Event)
    error: protocol.ProtocolError | None = None
    failed: tuple[str, str] | None = None  # a reclaim's (code, message) answered in its form


class Cluster:
    """Registry entries, links and cross-node joins of one node."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        config = hub.config.cluster
        self._timeout = config.request_timeout
        self.node_id = config.node_id or load_node_id(hub.state_dir)
        self.available = False
        self.node_count = 0  # live nodes at the last registry refresh
        self.redis_latency = 0.0  # seconds of the last registry refresh's PING
        self._redis: coredis.Redis[bytes] | None = None
        self.publisher = Publisher(self.node_id, self._timeout)
        self._dirty = trio.Event()
        self._gone_rooms: set[str] = set()
        # Registry writes and the clean stop's delete take turns: no refresh lands after it.
        self._registry_lock = trio.Lock()
        self._leaving = False
        self._gone_agents: set[str] = set()  # registry keys of agents and senders that left
        self._remote_members: dict[tuple[str, int], RemoteMember] = {}  # rooms held here
        self._remote_peers: dict[int, Peer] = {}  # local members of rooms held elsewhere
        self._remote_owners: dict[tuple[str, int], RemoteOwner] = {}  # of rooms held here
        self._owners_here: dict[int, Peer] = {}  # local owners of rooms held elsewhere
        self._joins: dict[int, _PendingJoin] = {}
        self._join_ids = itertools.count(1)
        self._last_warning = -_WARN_EVERY
        self._subscribed = trio.Event()
        self.advertise_url = config.advertise_url
        self._http: httpx.AsyncClient | None = None
        self.clients = SharedClients(self)
        self.moosicbox_tokens = SharedTokens(self)
        self.admin = RemoteAdmin(self)

    @property
    def redis(self) -> coredis.Redis[bytes] | None:
        """The Redis client while linked; None while Redis cannot be reached."""
        return self._redis if self.available else None

    def listening(self, binds: list[str]) -> None:
        """The daemon is listening: announce its first address unless advertise_url is set."""
        if not self.advertise_url and binds:
            bind = binds[0]
            self.advertise_url = bind if "://" in bind else f"http://{bind}"
            self._dirty.set()

    def tunnel_changed(self, left: str | None = None, *, moosicbox: bool = False) -> None:
        """An agent (a MoosicBox sender) connected here, or ``left``: announce it at once (not
        at the next refresh), so that its reconnection elsewhere is not taken for a second one."""
        if left is not None:
            self._gone_agents.add((sender_key if moosicbox else tunnel_key)(left))
        self._dirty.set()

    @property
    def _ttl_ms(self) -> int:
        return int(self.hub.config.cluster.node_ttl * 1000)

    # -- running ----------------------------------------------------------------------------

    def _client(self) -> coredis.Redis[bytes]:
        config = self.hub.config.cluster
        kwargs: dict[str, Any] = {"decode_responses": False}
        if config.redis_password:
            kwargs["password"] = config.redis_password
        return coredis.Redis.from_url(config.redis_url, **kwargs)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the registry, the subscription and the publisher running until cancelled."""
        redis = self._client()
        timeout = httpx.Timeout(self.hub.config.cluster.request_timeout, read=None, write=None)
        async with redis, httpx.AsyncClient(timeout=timeout) as http:
            self._redis, self._http = redis, http
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._subscribe_loop, redis)
                nursery.start_soon(self.publisher.run, redis, self._fault)
                nursery.start_soon(self._registry_loop, redis)
                # Start serving even when Redis is down (local rooms work); give it a moment.
                with trio.move_on_after(self.hub.config.cluster.request_timeout):
                    await self._subscribed.wait()
                task_status.started()

    async def leave(self) -> None:
        """On a clean stop, drop this node's heartbeat and rooms from the registry at once
        (a node that dies leaves them to expire within ``node_ttl``)."""
        if self._redis is None or not self.available:
            return
        keys = [node_key(self.node_id), node_rooms_key(self.node_id)]
        keys += [room_key(uuid) for uuid in [*self.hub.instances, *self._gone_rooms]]
        with trio.move_on_after(self.hub.config.cluster.request_timeout):
            await self.publisher.wait_idle()  # the rooms' last words (instance_destroyed) first
            self.available = False
            self._leaving = True  # no refresh may put the keys back
            async with self._registry_lock:  # one under way finishes first
                try:
                    await self._redis.delete(keys)
                    await self._redis.srem(NODES, [self.node_id])
                except* FAULTS:
                    pass  # they expire within node_ttl anyway

    async def _subscribe_loop(self, redis: coredis.Redis[bytes]) -> None:
        while True:
            try:
                await self._subscribe(redis)
            except* FAULTS as group:  # coredis raises from its task groups, so in groups
                self._fault(f"subscription: {group.exceptions[0]!r}")
            await trio.sleep(_RETRY_DELAY)

    async def _subscribe(self, redis: coredis.Redis[bytes]) -> None:
        """Listen on this node's channel, refresh the registry once subscribed, dispatch."""
        async with redis.pubsub(
            channels=[channel(self.node_id)], ignore_subscribe_messages=True, retry_policy=None
        ) as pubsub:
            with trio.fail_after(self._timeout):
                await self._refresh(redis)
                await self.clients.link(redis)
                await self.moosicbox_tokens.link(redis)
            self._up()
            async for message in pubsub:
                data = message["data"]
                if isinstance(data, bytes):
                    await self._dispatch(data)

    def _up(self) -> None:
        if not self.available:
            self.available = True
            log.info("cluster: node %s linked through Redis", self.node_id)
        self._subscribed.set()

    def _fault(self, what: str) -> None:
        """Redis failed: cut every cross-node link and say so (once a minute while it lasts)."""
        now = time.monotonic()
        if self.hub.stopping:
            pass
        elif self.available or now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning("cluster: Redis unavailable (%s); serving local rooms only", what)
        self.available = False
        self.publisher.clear()
        self._cut_links(None, CLUSTER_UNAVAILABLE)

    # -- to other nodes ---------------------------------------------------------------------

    def send(self, node: str, op: wire.Op, frame: wire.Frame | None = None) -> None:
        """Queue ``op`` (carrying ``frame``) for ``node``; queued operations leave in order."""
        if not self.available:
            return  # the links are cut already and their peers told
        self.publisher.queue(node, op, frame)
        limit = self.hub.config.cluster.max_pending_bytes
        if self.publisher.pending_bytes > limit:
            self._fault(f"more than {limit} bytes unpublished")

    # -- what other nodes send --------------------------------------------------------------

    async def _dispatch(self, data: bytes) -> None:
        try:
            batch = wire.decode(data)
        except msgspec.DecodeError:
            log.warning("cluster: dropped an undecodable message (%d bytes)", len(data))
            return
        for op in batch.ops:
            try:
                await self._apply(batch.node, op, batch.frames)
            except Exception:  # one bad operation must not cut this node's links
                log.exception("cluster: failed to apply %r from %s", op, batch.node)

    async def _apply(self, node: str, op: wire.Op, frames: list[Any]) -> None:
        if isinstance(op, wire.Deliver):
            peer = self._remote_peers.get(op.peer) or self._owners_here.get(op.peer)
            if peer is not None:
                peer.offer(frames[op.frame])
        elif isinstance(op, wire.FromMember):
            await self._from_member(node, op, frames[op.frame])
        elif isinstance(op, wire.Close):
            peer = self._remote_peers.pop(op.peer, None)
            if peer is not None:
                peer.joined = None
                peer.close(op.code, op.reason)
        elif isinstance(op, wire.Join):
            self._seat(node, op)
        elif isinstance(op, wire.JoinReply):
            self._seated(node, op)
        elif isinstance(op, wire.Leave):
            member = self._remote_members.pop((node, op.peer), None)
            if member is not None and member.joined is not None:
                member.joined.remove_member(cast("Peer", member))
                self._dirty.set()
        else:
            self._dispatch_owner(node, op, frames)

    def _dispatch_owner(self, node: str, op: wire.Op, frames: list[Any]) -> None:
        """Operations about an owner whose socket and room are on different nodes."""
        if isinstance(op, wire.Reclaim):
            self._hand_over(node, op)
        elif isinstance(op, wire.ReclaimReply):
            self._reclaimed(node, op)
        elif isinstance(op, wire.FromOwner):
            instance, owner = self._owned_here(node, op.uuid, op.peer)
            if instance is not None and owner is not None:
                missing = instance.from_owner(frames[op.frame], op.to)
                if missing:
                    _user_not_found(owner, f"not in the room: {', '.join(missing)}", op.msg_id)
        elif isinstance(op, wire.Kick):
            instance, owner = self._owned_here(node, op.uuid, op.peer)
            if instance is not None and owner is not None:
                if not self.hub.kick(instance, op.user_id, "kicked by host", op.msg_id):
                    _user_not_found(owner, f"no user {op.user_id!r} in this room", op.msg_id)
        elif isinstance(op, wire.OwnerLeft):
            instance, owner = self._owned_here(node, op.uuid, op.peer)
            if instance is not None and owner is not None:
                self._owner_gone(instance, owner)
        elif isinstance(op, wire.AdminAsk):
            self.admin.answer(node, op)
        elif isinstance(op, wire.AdminAnswer):
            self.admin.answered(op)
        elif isinstance(op, wire.CloseRoom):
            self.hub.close_instance(op.uuid, op.reason)
        elif isinstance(op, wire.DropAgent):
            if not op.moosicbox:
                self.hub.tunnels.disconnect(op.client_id, op.code, op.reason)
            elif op.code == closecodes.ALREADY_CONNECTED:  # replaced: its app sockets stay
                self.hub.moosicbox.close_sender(op.client_id, op.code, op.reason)
            else:
                self.hub.moosicbox.disconnect(op.client_id, op.code, op.reason)
        elif isinstance(op, wire.Disown):
            peer = self._owners_here.get(op.peer)
            if peer is not None:
                peer.owned.pop(op.uuid, None)
                self._forget_owner_if_done(peer)

    def _owned_here(
        self, node: str, uuid: str, peer_id: int
    ) -> tuple[Instance | None, RemoteOwner | None]:
        """Room ``uuid`` held here and its owner, if that owner is ``peer_id`` of ``node``."""
        owner = self._remote_owners.get((node, peer_id))
        instance = self.hub.instances.get(uuid)
        if owner is None or instance is None or instance.owner is not owner:  # type: ignore[comparison-overlap]
            return None, None
        return instance, owner

    def _owner_gone(self, instance: Instance, owner: RemoteOwner) -> None:
        """A room's owner on another node left: the grace period starts here, as for a local
        owner's socket."""
        owner.owned.pop(instance.uuid, None)
        if not owner.owned:
            self._remote_owners.pop((owner.node, owner.peer_id), None)
        grace = self.hub.config.relay.owner_grace
        if grace > 0:
            instance.owner_left(grace)
        else:
            instance.owner = None
            instance.destroy("owner_gone")

    def _hand_over(self, node: str, op: wire.Reclaim) -> None:
        """Another node's peer reclaims a room held here: run the same checks, then make it the
        owner (its frames and the inbox's held frames go to its node from now on)."""
        instance = self.hub.instances.get(op.uuid)
        owner = self._remote_owners.get((node, op.peer)) or RemoteOwner(
            self, node, op.peer, op.browser_key
        )
        reply = wire.ReclaimReply(op.request, op.peer, op.uuid)
        if instance is None or instance.destroyed_reason is not None:
            reply.code, reply.message = protocol.INSTANCE_NOT_FOUND, "Instance not found"
        elif op.service and op.service != instance.service:
            reply.code = protocol.SERVICE_MISMATCH
            reply.message = f"instance belongs to {instance.service!r}"
        elif not instance.token_matches(op.token):
            reply.code, reply.message = protocol.INVALID_TOKEN, "Invalid instance token"
        elif not instance.may_reclaim(cast("Peer", owner), op.owner_key):
            reply.code = protocol.NOT_OWNER
            reply.message = (
                "only the room's owner may reclaim it: present its ownerKey, or reclaim from"
                " the browser that created it"
            )
        elif instance.owner is not None:
            reply.code, reply.failed = protocol.OWNER_CONNECTED, True
            reply.message = (
                "Cannot reclaim instance (owner already connected or grace period expired)"
            )
        if reply.code or instance is None:
            self.send(node, reply)
            return
        reply.name, reply.has_token = instance.name, instance.has_token
        reply.user_count, reply.owner_key = len(instance.members), instance.owner_key
        self.send(node, reply)  # before any frame the owner gets from now on
        self._remote_owners[(node, op.peer)] = owner
        owner.owned[instance.uuid] = instance
        instance.reclaim(cast("Peer", owner))
        self._dirty.set()

    def _reclaimed(self, node: str, op: wire.ReclaimReply) -> None:
        """The node holding the room answered a reclaim: the local peer owns it from here."""
        pending = self._joins.pop(op.request, None)
        if pending is None or pending.peer.closing:
            if not op.code:  # nobody waits any more: the owner is gone again
                self.send(node, wire.OwnerLeft(op.uuid, op.peer))
            if pending is not None:
                pending.done.set()
            return
        peer = pending.peer
        if op.code and op.failed:
            pending.failed = (op.code, op.message)
        elif op.code:
            pending.error = protocol.ProtocolError(op.code, op.message, pending.msg_id)
        else:
            room = OwnedRemoteRoom(self, node, op.uuid, op.name, peer)
            peer.owned[op.uuid] = cast("Instance", room)
            self._owners_here[peer.id] = peer
            peer.offer(
                protocol.encode(
                    "instance_reclaimed",
                    {
                        "success": True,
                        "uuid": op.uuid,
                        "name": op.name,
                        "hasToken": op.has_token,
                        "userCount": op.user_count,
                        "ownerKey": op.owner_key,
                    },
                    pending.msg_id,
                )
            )
        pending.done.set()

    def forget_owner(self, peer: Peer, uuid: str) -> None:
        """A local owner left a room held elsewhere."""
        peer.owned.pop(uuid, None)
        self._forget_owner_if_done(peer)

    def _forget_owner_if_done(self, peer: Peer) -> None:
        if not any(isinstance(room, OwnedRemoteRoom) for room in peer.owned.values()):
            self._owners_here.pop(peer.id, None)

    async def _from_member(self, node: str, op: wire.FromMember, frame: wire.Frame) -> None:
        member = self._remote_members.get((node, op.peer))
        if member is None or member.joined is None:
            return
        timeout = self.hub.config.relay.slow_consumer_timeout
        if not await member.joined.from_member(cast("Peer", member), frame, timeout):
            member.offer(
                protocol.encode_error(
                    protocol.HOST_BUSY, "the host is not keeping up; message not delivered"
                )
            )

    def _seat(self, node: str, op: wire.Join) -> None:
        """Another node asks to seat one of its peers in a room held here."""
        instance = self.hub.instances.get(op.uuid)
        try:
            if instance is None or instance.destroyed_reason is not None:
                raise protocol.ProtocolError(
                    protocol.INSTANCE_NOT_FOUND, "Instance not found or not available"
                )
            user_id = handlers.check_join(
                self.hub, instance, op.service, op.token, op.user_id, None
            )
        except protocol.ProtocolError as error:
            self.send(
                node,
                wire.JoinReply(op.request, op.peer, op.uuid, "", "", error.code, error.message),
            )
            return
        member = RemoteMember(self, node, op.peer, user_id)
        self._remote_members[(node, op.peer)] = member
        self.send(node, wire.JoinReply(op.request, op.peer, op.uuid, user_id, instance.name))
        instance.add_member(user_id, cast("Peer", member))
        self._dirty.set()

    def _seated(self, node: str, op: wire.JoinReply) -> None:
        """The owning node answered a join: seat the peer (before any frame that follows)."""
        pending = self._joins.pop(op.request, None)
        if pending is None or pending.peer.closing or pending.peer.joined is not None:
            if not op.code:  # nobody waits any more: give the seat back
                self.send(node, wire.Leave(op.uuid, op.peer))
            if pending is not None:
                pending.done.set()
            return
        if op.code:
            pending.error = protocol.ProtocolError(op.code, op.message, pending.msg_id)
        else:
            peer = pending.peer
            peer.offer(handlers.join_ack(op.uuid, op.name, op.user_id, pending.msg_id))
            peer.joined = cast("Instance", RemoteRoom(self, node, op.uuid, op.name))
            peer.user_id = op.user_id
            self._remote_peers[peer.id] = peer
        pending.done.set()

    # -- what the relay asks ----------------------------------------------------------------

    async def join(
        self,
        peer: Peer,
        service: str | None,
        request: protocol.JoinInstance,
        msg_id: protocol.MessageId | None,
    ) -> None:
        """Seat ``peer`` in a room held by another node, or raise why not."""
        entry = await self._room_entry(request.uuid, msg_id)
        if entry is None or entry.node == self.node_id:
            raise protocol.ProtocolError(
                protocol.INSTANCE_NOT_FOUND, "Instance not found or not available", msg_id
            )
        if not self.available:
            raise self._unavailable(msg_id)
        await self._ask_room_node(
            entry.node,
            lambda request_id: wire.Join(
                request_id, peer.id, request.uuid, service, request.token, request.userId
            ),
            peer,
            msg_id,
        )

    async def reclaim(
        self,
        peer: Peer,
        service: str | None,
        request: protocol.ReclaimInstance,
        msg_id: protocol.MessageId | None,
    ) -> tuple[str, str] | None:
        """Make ``peer`` the owner of a room held by another node (in its grace period), or
        raise why not; return (code, message) for the reference's ``success: false`` answer."""
        entry = await self._room_entry(request.uuid, msg_id)
        if entry is None or entry.node == self.node_id:
            raise protocol.ProtocolError(protocol.INSTANCE_NOT_FOUND, "Instance not found", msg_id)
        if not self.available:
            raise self._unavailable(msg_id)
        pending = await self._ask_room_node(
            entry.node,
            lambda request_id: wire.Reclaim(
                request_id,
                peer.id,
                request.uuid,
                service,
                request.token,
                request.ownerKey,
                peer.browser_key,
            ),
            peer,
            msg_id,
        )
        return pending.failed

    async def _ask_room_node(
        self,
        node: str,
        make_op: Callable[[int], wire.Op],
        peer: Peer,
        msg_id: protocol.MessageId | None,
    ) -> _PendingJoin:
        """Send ``node`` a join or reclaim for ``peer`` and wait for its verdict; raise the
        refusal it sent, or ``cluster_unavailable`` when none comes within request_timeout."""
        request_id = next(self._join_ids)
        pending = _PendingJoin(peer, msg_id)
        self._joins[request_id] = pending
        self.send(node, make_op(request_id))
        with trio.move_on_after(self.hub.config.cluster.request_timeout):
            await pending.done.wait()
        if not pending.done.is_set():
            self._joins.pop(request_id, None)
            raise protocol.ProtocolError(
                CLUSTER_UNAVAILABLE, "the node holding this room did not answer; retry", msg_id
            )
        if pending.error is not None:
            raise pending.error
        return pending

    async def close_elsewhere(self, uuid: str, reason: str) -> bool:
        """Ask the node holding room ``uuid`` to close it; False if no other node holds it."""
        try:
            entry = await self._room_entry(uuid, None)
        except protocol.ProtocolError:
            return False  # Redis cannot be reached: only this node's rooms can be closed
        if entry is None or entry.node == self.node_id:
            return False
        self.send(entry.node, wire.CloseRoom(uuid, reason))
        return True

    def owns_remotely(self, room: object) -> OwnedRemoteRoom | None:
        """``room`` as a room held elsewhere that a local peer owns (None for a local room)."""
        return room if isinstance(room, OwnedRemoteRoom) else None

    def members_here(self) -> Iterable[Peer]:
        """This node's sockets that are members of rooms held elsewhere."""
        return self._remote_peers.values()

    @property
    def http(self) -> httpx.AsyncClient | None:
        """The node-to-node HTTP client (None before the cluster runs)."""
        return self._http

    def forget_peer(self, peer: Peer) -> None:
        """A local member of a room held elsewhere left it."""
        self._remote_peers.pop(peer.id, None)

    def forget_member(self, member: RemoteMember) -> None:
        """A member from another node was closed (kick, room closed): stop routing to it."""
        self._remote_members.pop((member.node, member.peer_id), None)
        self._dirty.set()

    async def _room_entry(self, uuid: str, msg_id: protocol.MessageId | None) -> RoomEntry | None:
        if self._redis is None or not self.available:
            raise self._unavailable(msg_id)
        try:
            with trio.fail_after(self._timeout):
                data = await self._redis.get(room_key(uuid))
        except FAULTS as exc:
            self._fault(f"get: {exc!r}")
            raise self._unavailable(msg_id) from None
        if data is None:
            return None
        return msgspec.msgpack.decode(data, type=RoomEntry)

    def _unavailable(self, msg_id: protocol.MessageId | None) -> protocol.ProtocolError:
        return protocol.ProtocolError(
            CLUSTER_UNAVAILABLE,
            "the cluster is unavailable (Redis cannot be reached): only rooms on this node work",
            msg_id,
        )

    async def list_rooms(self, service: str | None) -> list[dict[str, Any]]:
        """Every room of the cluster (of ``service``), oldest first; this node's alone when
        Redis cannot be reached."""
        rooms = [i.describe() for i in self.hub.instances_of(service)]
        for entry in await self.remote_rooms():
            if service is None or entry.room.get("service") == service:
                rooms.append(entry.room)
        return sorted(rooms, key=lambda room: (room["createdAt"], room["uuid"]))

    async def remote_rooms(self) -> list[RoomEntry]:
        """The registry's rooms held by other nodes (none when Redis cannot be reached)."""
        if self._redis is None or not self.available:
            return []
        entries = []
        try:
            with trio.fail_after(self._timeout):
                for node in await self._live_nodes(self._redis):
                    if node.node == self.node_id:
                        continue
                    rooms = await self._redis.hgetall(node_rooms_key(node.node))
                    for value in rooms.values():
                        entry = msgspec.msgpack.decode(value, type=RoomEntry)
                        if entry.node == node.node:
                            entries.append(entry)
        except FAULTS as exc:
            self._fault(f"listing: {exc!r}")
            return []
        return entries

    async def _live_nodes(self, redis: coredis.Redis[bytes]) -> list[NodeEntry]:
        """The nodes whose heartbeat is alive, by id; the dead ones are dropped from NODES."""
        ids = sorted(member.decode() for member in await redis.smembers(NODES))
        values = await redis.mget([node_key(node) for node in ids]) if ids else ()
        dead = [node for node, value in zip(ids, values, strict=True) if value is None]
        if dead:
            await redis.srem(NODES, dead)
        return [msgspec.msgpack.decode(value, type=NodeEntry) for value in values if value]

    async def nodes(self) -> list[NodeEntry]:
        """The live nodes' heartbeats (this node's own when Redis cannot be reached)."""
        if self._redis is not None and self.available:
            try:
                with trio.fail_after(self._timeout):
                    return await self._live_nodes(self._redis)
            except FAULTS as exc:
                self._fault(f"nodes: {exc!r}")
        return [self._node_entry()]

    async def describe(self) -> dict[str, Any]:
        """This node and the cluster's live nodes, for ``/_api/status`` and ``wstunctl status``."""
        return {
            "node": self.node_id,
            "available": self.available,
            "redisLatency": round(self.redis_latency, 6),
            "nodes": [msgspec.to_builtins(node) for node in await self.nodes()],
        }

    # -- the tunnel ---------------------------------------------------------------------------

    async def route_tunnel(
        self, client_id: str, scope: Scope, receive: Receive, send: Send, *, moosicbox: bool = False
    ) -> bool:
        """Answer a tunnel (``moosicbox``: a MoosicBox) request whose agent (sender) is on
        another node; False to serve it here.

        A request from another node (it carries the cluster secret) is always served here.
        HTTP and WebSocket alike.
        """
        given = hop_secret(scope)
        secret = self.hub.config.cluster.secret
        if given is not None:
            if not hop_allowed(given, secret):
                if scope["type"] == "websocket":
                    refused = ServerWebSocket(scope, receive, send)
                    if await refused.wait_connect():
                        await refused.deny(403, "forbidden", "wrong cluster secret")
                else:
                    await send_json_error(send, 403, "forbidden", "wrong cluster secret")
                return True
            without_hop(scope)
            return False
        here = self.hub.moosicbox.senders if moosicbox else self.hub.tunnels.sessions
        if client_id in here or not secret:
            return False
        target = await self._tunnel_node(client_id, sender_key if moosicbox else tunnel_key)
        if target is None or not target.advertise_url or self._http is None:
            return False
        if scope["type"] == "websocket":
            timeout = (
                self.hub.config.cluster.request_timeout + self.hub.config.tunnel.request_timeout
            )
            await forward_websocket(target.advertise_url, secret, timeout, scope, receive, send)
            return True
        await forward_http(
            self._http,
            target.advertise_url,
            secret,
            self.hub.config.tunnel.request_timeout + self.hub.config.cluster.request_timeout,
            scope,
            receive,
            send,
        )
        return True

    async def agent_node(self, client_id: str) -> str | None:
        """The live node (not this one) holding an agent for ``client_id``, if any."""
        entry = await self._tunnel_node(client_id)
        return entry.node if entry is not None else None

    def drop_agent(
        self,
        node: str,
        client_id: str,
        code: int = closecodes.ALREADY_CONNECTED,
        reason: str = "replaced by a new agent",
        *,
        moosicbox: bool = False,
    ) -> None:
        """Ask ``node`` to close its agent (``moosicbox``: its MoosicBox sender) for
        ``client_id`` (a new one connected here, or the client was removed)."""
        self.send(node, wire.DropAgent(client_id, code, reason, moosicbox))

    async def sender_node(self, client_id: str) -> str | None:
        """The live node (not this one) holding a MoosicBox sender for ``client_id``, if any."""
        entry = await self._tunnel_node(client_id, sender_key)
        return entry.node if entry is not None else None

    async def _tunnel_node(
        self, client_id: str, key: Callable[[str], str] = tunnel_key
    ) -> NodeEntry | None:
        """The live node (not this one) holding ``client_id``'s agent, per the registry."""
        if self._redis is None or not self.available:
            return None
        try:
            with trio.fail_after(self._timeout):
                node = await self._redis.get(key(client_id))
                if node is None or node.decode() == self.node_id:
                    return None
                value = await self._redis.get(node_key(node.decode()))
        except FAULTS as exc:
            self._fault(f"tunnel lookup: {exc!r}")
            return None
        if value is None:
            return None
        return msgspec.msgpack.decode(value, type=NodeEntry)

    def gauges(self) -> Iterator[Metric]:
        """The cluster's gauges for ``/metrics``: link state, Redis latency, cross-node load."""
        yield GaugeMetricFamily(
            "wstund_cluster_linked", "1 while this node reaches Redis", int(self.available)
        )
        yield GaugeMetricFamily(
            "wstund_cluster_nodes", "Live nodes at the last registry refresh", self.node_count
        )
        yield GaugeMetricFamily(
            "wstund_cluster_redis_latency_seconds",
            "Round trip of the last registry refresh's PING",
            self.redis_latency,
        )
        yield GaugeMetricFamily(
            "wstund_cluster_remote_members",
            "Members seated in this node's rooms from other nodes",
            len(self._remote_members),
        )
        yield GaugeMetricFamily(
            "wstund_cluster_remote_joined",
            "This node's peers seated in rooms held by other nodes",
            len(self._remote_peers),
        )
        yield CounterMetricFamily(
            "wstund_cluster_published_batches",
            "PUBLISH calls to other nodes (one batch of operations each)",
            self.publisher.published,
        )
        yield CounterMetricFamily(
            "wstund_cluster_relayed_operations",
            "Operations (frames, joins, closes) sent to other nodes",
            self.publisher.relayed_ops,
        )

    # -- the registry -----------------------------------------------------------------------

    async def room_opened(self, instance: Instance) -> None:
        """Register a new room at once, so that a join on another node finds it."""
        self._gone_rooms.discard(instance.uuid)
        if self._redis is None or not self.available:
            return
        try:
            value = self._room_value(instance)
            with trio.fail_after(self._timeout):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.set(room_key(instance.uuid), value, px=self._ttl_ms)
                    pipe.hset(node_rooms_key(self.node_id), {instance.uuid: value})
                    pipe.pexpire(node_rooms_key(self.node_id), self._ttl_ms)
        except FAULTS as exc:
            self._fault(f"register: {exc!r}")

    def room_closed(self, instance: Instance) -> None:
        """Drop a room from the registry (at the next refresh, which is woken now)."""
        self._gone_rooms.add(instance.uuid)
        self._dirty.set()
        owner = cast(object, instance.owner)
        if isinstance(owner, RemoteOwner):  # it was told instance_destroyed; now it owns no more
            self.send(owner.node, wire.Disown(instance.uuid, owner.peer_id))
            if not owner.owned:
                self._remote_owners.pop((owner.node, owner.peer_id), None)

    def _room_value(self, instance: Instance) -> bytes:
        return msgspec.msgpack.encode(RoomEntry(self.node_id, instance.describe()))

    def _node_entry(self) -> NodeEntry:
        hub = self.hub
        return NodeEntry(
            node=self.node_id,
            advertise_url=self.advertise_url,
            started_at=hub.started_at,
            rooms=len(hub.instances),
            members=sum(len(i.members) for i in hub.instances.values()),
            connections=hub.connection_count,
        )

    async def _registry_loop(self, redis: coredis.Redis[bytes]) -> None:
        interval = self.hub.config.cluster.node_ttl / 3
        while True:
            with trio.move_on_after(interval):
                await self._dirty.wait()
            self._dirty = trio.Event()
            if not self.available:
                continue  # the subscription loop reconnects and refreshes first
            try:
                with trio.fail_after(self._timeout):
                    await self._refresh(redis)
                    await self._check_nodes(redis)
            except FAULTS as exc:
                self._fault(f"registry: {exc!r}")

    async def _refresh(self, redis: coredis.Redis[bytes]) -> None:
        """Write this node's heartbeat and rooms (TTL ``node_ttl``), drop its closed rooms."""
        async with self._registry_lock:
            if not self._leaving:
                await self._write_registry(redis)

    async def _write_registry(self, redis: coredis.Redis[bytes]) -> None:
        started = time.monotonic()
        await redis.ping()
        self.redis_latency = time.monotonic() - started
        gone, self._gone_rooms = self._gone_rooms, set()
        here = [tunnel_key(c) for c in self.hub.tunnels.sessions]
        here += [sender_key(c) for c in self.hub.moosicbox.senders]
        agents_gone, self._gone_agents = self._gone_agents - set(here), set()
        rooms = {uuid: self._room_value(i) for uuid, i in self.hub.instances.items()}
        try:
            await self._write_entries(redis, rooms, here, gone, agents_gone)
        except BaseException:
            self._gone_rooms |= gone - set(self.hub.instances)  # the next refresh tries again
            self._gone_agents |= agents_gone
            raise
        self.node_count = len(await self._live_nodes(redis))

    async def _write_entries(
        self,
        redis: coredis.Redis[bytes],
        rooms: dict[str, bytes],
        here: list[str],
        gone: set[str],
        agents_gone: set[str],
    ) -> None:
        ttl = self._ttl_ms
        listing = node_rooms_key(self.node_id)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(node_key(self.node_id), msgspec.msgpack.encode(self._node_entry()), px=ttl)
            pipe.sadd(NODES, [self.node_id])
            for uuid, value in rooms.items():
                pipe.set(room_key(uuid), value, px=ttl)
            if rooms:
                pipe.hset(listing, rooms)
            pipe.pexpire(listing, ttl)
            for key in here:
                pipe.set(key, self.node_id.encode(), px=ttl)
            if gone:
                pipe.delete([room_key(uuid) for uuid in gone])
                pipe.hdel(listing, list(gone))
            for key in agents_gone:
                pipe.eval(DELETE_IF_OURS, [key], [self.node_id])

    async def _check_nodes(self, redis: coredis.Redis[bytes]) -> None:
        """Cut the links to nodes whose heartbeat expired (they died)."""
        linked = {member.node for member in self._remote_members.values()}
        linked |= {cast(RemoteRoom, peer.joined).node for peer in self._remote_peers.values()}
        linked.discard(self.node_id)
        if not linked:
            return
        nodes = sorted(linked)
        values = await redis.mget([node_key(node) for node in nodes])
        for node, value in zip(nodes, values, strict=True):
            if value is None:
                log.warning("cluster: node %s is gone; closing its links", node)
                self._cut_links(node, NODE_GONE)

    def _cut_links(self, node: str | None, reason: str) -> None:
        """End the cross-node memberships with ``node`` (all when None), telling both sides."""
        for key, member in list(self._remote_members.items()):
            if node is None or member.node == node:
                del self._remote_members[key]
                member.close_code = closecodes.ROOM_CLOSED  # its node cannot be told
                if member.joined is not None:
                    member.joined.remove_member(cast("Peer", member))
        for peer_id, peer in list(self._remote_peers.items()):
            room = cast(RemoteRoom, peer.joined)
            if node is None or room is None or room.node == node:
                del self._remote_peers[peer_id]
                peer.joined = None
                if room is not None:
                    peer.offer(
                        protocol.encode("instance_destroyed", {"uuid": room.uuid, "reason": reason})
                    )
                peer.close(closecodes.ROOM_CLOSED, f"instance closed: {reason}")
        for key, owner in list(self._remote_owners.items()):
            if node is None or owner.node == node:
                del self._remote_owners[key]
                for instance in list(owner.owned.values()):
                    if instance.owner is owner:  # type: ignore[comparison-overlap]
                        self._owner_gone(instance, owner)
        for peer in list(self._owners_here.values()):
            for uuid, owned in list(peer.owned.items()):
                held = self.owns_remotely(owned)
                if held is not None and (node is None or held.node == node):
                    del peer.owned[uuid]
                    peer.offer(
                        protocol.encode("instance_destroyed", {"uuid": uuid, "reason": reason})
                    )
            self._forget_owner_if_done(peer)
        for pending in self._joins.values():
            pending.error = self._unavailable(pending.msg_id)
            pending.done.set()
        self._joins.clear()
