"""The tunnel client registry shared by every node: a client registered on one node lets its
agent log in on any node (an agent behind a round-robin load balancer lands anywhere).

Redis holds one hash, ``wstund:clients``: client id → its secret's SHA-256 digest and creation
time (never the secret), or a tombstone once removed, so that a node that was away while a
client was removed cannot bring it back. Each node keeps its own SQLite registry as a copy: it
pushes the clients only it knows when it links up, takes Redis's word for the rest, and looks a
client up in Redis at each agent login, so that a registration, a rotation or a removal made on
any node applies on every node. While Redis cannot be reached, logins use the local copy (a node
still accepts the clients it knows) and registrations, removals and rotations are refused with
``cluster_unavailable`` (made on one node alone, they would differ between nodes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import coredis
import msgspec
import trio

from .. import closecodes
from ..tunnel.registry import (
    ClientExists,
    InvalidClientId,
    Registry,
    hash_secret,
    new_secret,
    valid_client_id,
)
from .publisher import FAULTS
from .registry import PREFIX

if TYPE_CHECKING:
    from .node import Cluster

CLIENTS_KEY = f"{PREFIX}clients"


class ClusterUnavailable(Exception):
    """Redis cannot be reached: a change to the shared registry is refused."""


class ClientEntry(msgspec.Struct, array_like=True):
    """A registered client as Redis holds it; ``removed`` marks a tombstone."""

    secret_hash: bytes
    created_at: float
    removed: bool = False


def _decode(value: bytes | None) -> ClientEntry | None:
    return None if value is None else msgspec.msgpack.decode(value, type=ClientEntry)


class SharedClients:
    """This node's view of the cluster's tunnel clients (its SQLite registry as a copy)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def registry(self) -> Registry:
        return self.cluster.hub.tunnels.registry

    def _redis(self) -> coredis.Redis[bytes]:
        redis = self.cluster.redis
        if redis is None:
            raise ClusterUnavailable
        return redis

    async def link(self, redis: coredis.Redis[bytes]) -> None:
        """On linking up: add the clients only this node knows, then take Redis's word."""
        async with redis.pipeline(transaction=False) as pipe:
            for record in self.registry.all():
                entry = ClientEntry(record.secret_hash, record.created_at)
                pipe.hsetnx(CLIENTS_KEY, record.id, msgspec.msgpack.encode(entry))
        self._apply_all(await redis.hgetall(CLIENTS_KEY))

    async def pull(self) -> None:
        """Bring the local copy up to date with Redis (kept as it is when Redis is away)."""
        try:
            redis = self._redis()
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                found = await redis.hgetall(CLIENTS_KEY)
        except ClusterUnavailable:
            return
        except FAULTS as exc:
            self.cluster._fault(f"clients: {exc!r}")
            return
        self._apply_all(found)

    async def sync(self, client_id: str) -> None:
        """Before an agent's login: bring ``client_id`` up to date with Redis, if reachable."""
        if not valid_client_id(client_id):
            return
        try:
            entry = await self._get(client_id)
        except ClusterUnavailable:
            return  # the local copy decides
        if entry is None:
            record = self.registry.get(client_id)
            if record is not None:  # registered here while Redis was away: share it
                await self._put(client_id, ClientEntry(record.secret_hash, record.created_at))
            return
        self._apply(client_id, entry)

    async def add(self, client_id: str) -> str:
        """Register a client on every node; its secret (shown once, stored only as a hash)."""
        if not valid_client_id(client_id):
            raise InvalidClientId(client_id)
        entry = await self._get(client_id)
        if (entry is not None and not entry.removed) or (
            entry is None and self.registry.get(client_id) is not None
        ):
            raise ClientExists(client_id)
        secret = new_secret()
        entry = ClientEntry(hash_secret(secret), time.time())
        await self._put(client_id, entry)
        self._apply(client_id, entry)
        return secret

    async def remove(self, client_id: str) -> bool:
        """Forget a client on every node and close its agent wherever it is; False if unknown."""
        entry = await self._get(client_id)
        known = (entry is not None and not entry.removed) or (
            entry is None and self.registry.get(client_id) is not None
        )
        if not known:
            return False
        await self._put(client_id, ClientEntry(b"", time.time(), removed=True))
        self.registry.remove(client_id)
        await self._drop_agent(client_id, "client removed")
        return True

    async def rotate(self, client_id: str) -> str:
        """Give a client a new secret on every node, closing its agent; KeyError if unknown."""
        entry = await self._get(client_id)
        if entry is None:
            record = self.registry.get(client_id)
            if record is None:
                raise KeyError(client_id)
            entry = ClientEntry(record.secret_hash, record.created_at)
        if entry.removed:
            raise KeyError(client_id)
        secret = new_secret()
        entry = ClientEntry(hash_secret(secret), entry.created_at)
        await self._put(client_id, entry)
        self._apply(client_id, entry)
        await self._drop_agent(client_id, "secret rotated")
        return secret

    async def _drop_agent(self, client_id: str, reason: str) -> None:
        node = await self.cluster.agent_node(client_id)
        if node is not None:
            self.cluster.drop_agent(node, client_id, closecodes.KICKED, reason)

    def _apply_all(self, found: dict[bytes, bytes]) -> None:
        for key, value in found.items():
            entry = _decode(value)
            if entry is not None:
                self._apply(key.decode(), entry)

    def _apply(self, client_id: str, entry: ClientEntry) -> None:
        if entry.removed:
            if self.registry.remove(client_id):
                self.cluster.hub.tunnels.disconnect(client_id, closecodes.KICKED, "client removed")
        else:
            self.registry.put(client_id, entry.secret_hash, entry.created_at)

    async def _get(self, client_id: str) -> ClientEntry | None:
        redis = self._redis()
        try:
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                return _decode(await redis.hget(CLIENTS_KEY, client_id))
        except FAULTS as exc:
            self.cluster._fault(f"clients: {exc!r}")
            raise ClusterUnavailable from None

    async def _put(self, client_id: str, entry: ClientEntry) -> None:
        redis = self._redis()
        try:
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                await redis.hset(CLIENTS_KEY, {client_id: msgspec.msgpack.encode(entry)})
        except FAULTS as exc:
            self.cluster._fault(f"clients: {exc!r}")
            raise ClusterUnavailable from None
