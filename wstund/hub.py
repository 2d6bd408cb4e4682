"""The Hub: every piece of live state of one daemon, passed explicitly (never a global)."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from . import __version__, closecodes
from .config import Config
from .metrics import Metrics
from .moosicbox.state import MoosicBox
from .relay import protocol
from .relay.httprelay import HttpRelay
from .relay.instance import Instance
from .relay.peer import Peer
from .relay.ratelimit import SlidingWindow
from .relay.services import ServiceRegistry
from .tunnel.tunnels import Tunnels

if TYPE_CHECKING:
    from .cluster.node import Cluster


class InFlight:
    """Counts work a graceful stop should let finish (tunnelled requests, downloads)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count the enclosed work as in flight."""
        self.count += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight."""
        await self._idle.wait()


class Hub:
    """Owns services, rooms and connected peers; rooms run in the Hub's nursery."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.services = ServiceRegistry()
        self.instances: dict[str, Instance] = {}
        self.peers: set[Peer] = set()
        self.connections_by_address: Counter[str] = Counter()
        self.connection_count = 0
        self._all_released = trio.Event()
        self.failed_joins = SlidingWindow(60.0)
        self.started_at = time.time()
        self.stopping = False
        self.phase = "starting"  # then "ready" once it listens, "stopping" (``/ready``)
        self.metrics = Metrics()
        self.inflight = InFlight()
        self.http_relay = HttpRelay()
        self.installing: set[str] = set()  # marketplace installs under way (public + admin app)
        self.tunnels = Tunnels(self)
        self.moosicbox = MoosicBox(self)
        self._nursery: trio.Nursery | None = None
        self._stop_scopes: set[trio.CancelScope] = set()

        # Several nodes sharing rooms through Redis ([cluster] redis_url); None on a lone node.
        # The daemon sets it (the cluster code builds on the hub and the relay handlers).
        self.cluster: Cluster | None = None

    @contextmanager
    def until_stopped(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that a graceful stop cancels once the grace for in-flight work is
        over, so long work (a marketplace install) can still answer its caller."""
        with trio.CancelScope() as scope:
            self._stop_scopes.add(scope)
            try:
                yield scope
            finally:
                self._stop_scopes.discard(scope)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the rooms' task trees until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.cluster is not None:
                await nursery.start(self.cluster.run)
            task_status.started()
            await trio.sleep_forever()

    @property
    def version(self) -> str:
        return __version__

    def uptime(self) -> float:
        """Seconds since the Hub was created."""
        return time.time() - self.started_at

    def remove_service(self, name: str) -> None:
        """Close the rooms of an installed service and forget it (built-ins raise ValueError)."""
        for instance in self.instances_of(name):
            instance.destroy("service_removed")
        self.services.remove(name)

    # -- rooms ------------------------------------------------------------------------------

    def _new_uuid(self) -> str:
        while True:
            uuid = secrets.token_hex(4)
            if uuid not in self.instances:
                return uuid

    async def open_instance(
        self, service: str, name: str, token: str | None, owner: Peer
    ) -> Instance:
        """Create a room owned by ``owner`` and start its task tree under the Hub."""
        assert self._nursery is not None, "Hub.run() is not running"
        instance = Instance(
            self._new_uuid(),
            service,
            name,
            token,
            owner,
            inbox_size=self.config.relay.inbox_size,
            inbox_bytes=self.config.relay.max_inbox_bytes,
            on_destroyed=self._forget_instance,
        )
        self.instances[instance.uuid] = instance
        owner.owned[instance.uuid] = instance
        await self._nursery.start(instance.run)
        if self.cluster is not None:
            await self.cluster.room_opened(instance)
        return instance

    def _forget_instance(self, instance: Instance) -> None:
        self.instances.pop(instance.uuid, None)
        if self.cluster is not None:
            self.cluster.room_closed(instance)

    def instances_of(self, service: str | None) -> list[Instance]:
        """Rooms, oldest first, optionally of one service."""
        rooms = [i for i in self.instances.values() if service is None or i.service == service]
        return sorted(rooms, key=lambda i: (i.created_at, i.uuid))

    def close_instance(self, uuid: str, reason: str) -> bool:
        """Destroy one room; False if there is no such room."""
        instance = self.instances.get(uuid)
        if instance is None:
            return False
        instance.destroy(reason)
        return True

    def set_service_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a service; disabling closes its rooms and tells their owners."""
        service = self.services.get(name)
        if service is None:
            raise KeyError(name)
        service.enabled = enabled
        if enabled:
            return
        for instance in self.instances_of(name):
            if instance.owner is not None:
                instance.owner.offer(
                    protocol.encode(
                        "service_disabled", {"serviceName": name, "reason": "service disabled"}
                    )
                )
            instance.destroy("service_disabled")

    def kick(
        self,
        instance: Instance,
        user_id: str,
        reason: str,
        msg_id: protocol.MessageId | None = None,
    ) -> bool:
        """Kick a member: it gets ``kick`` then close 4003; the owner gets client_disconnected."""
        member = instance.members.get(user_id)
        if member is None:
            return False
        member.offer(protocol.encode("kick", {"reason": reason, "instanceUuid": instance.uuid}))
        instance.remove_member(member, msg_id)
        member.close(closecodes.KICKED, reason)
        return True

    def admit(self, address: str) -> str | None:
        """Count a new socket from ``address``; return why it is refused, or None."""
        limits = self.config.server
        if self.connection_count >= limits.max_connections:
            return f"server is at its connection limit ({limits.max_connections})"
        if self.connections_by_address[address] >= limits.max_connections_per_ip:
            return f"too many connections from {address} ({limits.max_connections_per_ip})"
        self.connections_by_address[address] += 1
        self.connection_count += 1
        if self._all_released.is_set():
            self._all_released = trio.Event()
        return None

    def release(self, address: str) -> None:
        """Forget a socket counted by ``admit``."""
        self.connection_count -= 1
        if self.connection_count == 0:
            self._all_released.set()
        self.connections_by_address[address] -= 1
        if self.connections_by_address[address] <= 0:
            del self.connections_by_address[address]

    # -- peers ------------------------------------------------------------------------------

    def detach(self, peer: Peer) -> None:
        """A peer is closing: leave its room, start the grace period of the rooms it owns."""
        if peer in self.peers and peer.close_code == closecodes.SLOW_CONSUMER:
            self.metrics.slow_consumer_drops.inc()
        self.peers.discard(peer)
        self.http_relay.peer_gone(peer)
        if peer.joined is not None:
            peer.joined.remove_member(peer)
        owned, peer.owned = list(peer.owned.values()), {}
        for instance in owned:
            if self.stopping or instance.destroyed_reason is not None:
                continue
            grace = self.config.relay.owner_grace
            if grace > 0:
                instance.owner_left(grace)
            else:
                instance.owner = None
                instance.destroy("owner_gone")

    async def shutdown(self, grace: float) -> None:
        """Stop taking work, let in-flight work finish, close rooms and sockets (1001).

        ``grace`` bounds the whole: in-flight work first, then the sockets' close handshakes.
        """
        self.stopping = True
        deadline = trio.current_time() + grace
        with trio.move_on_at(deadline):
            await self.inflight.wait_idle()
        for scope in list(self._stop_scopes):
            scope.cancel()
        for instance in list(self.instances.values()):
            instance.destroy("server_shutdown", closecodes.GOING_AWAY)
        for peer in list(self.peers):
            peer.close(closecodes.GOING_AWAY, "server shutting down")
        self.moosicbox.close_all(closecodes.GOING_AWAY, "server shutting down")
        with trio.move_on_at(max(deadline, trio.current_time() + 1.0)):
            if self.connection_count:
                await self._all_released.wait()
        if self.cluster is not None:
            await self.cluster.leave()
