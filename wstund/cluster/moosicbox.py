"""MoosicBox tokens shared by every node: a MoosicBox server registered through one node gets
its signature token from another and connects its sender to a third (behind a round-robin load
balancer it lands anywhere), as ``clients.py`` shares the tunnel's clients.

Redis holds every token as its SHA-256 hex only: ``wstund:moosicbox-tokens`` maps the hash to
its kind, client, creation and expiry; ``wstund:moosicbox-client:<id>`` (a sorted set by
creation time) lists a client's tokens, so that removing it or rotating its tokens revokes them
on every node and ``max_tokens_per_client`` holds cluster-wide; ``wstund:moosicbox-revoked``
records when each client was last revoked, so that a node that was away cannot bring its old
tokens back. Each node keeps its SQLite tokens as a copy, looks a token up in Redis at each
check, and pushes the tokens only it knows (issued before it joined) when it links up. While
Redis cannot be reached, checks use the local copy (a node still accepts the tokens it knows)
and every change (registration, new token, removal, rotation) is refused with
``cluster_unavailable``: made on one node alone, it would differ between nodes.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import coredis
import msgspec
import trio
from coredis.tokens import PureToken

from .. import closecodes
from ..tunnel.registry import SIGNATURE_LIFETIME, MoosicBoxTokens, TokenKind, TokenRow, token_hash
from .clients import ClusterUnavailable
from .publisher import FAULTS
from .registry import PREFIX

if TYPE_CHECKING:
    from .node import Cluster

TOKENS_KEY = f"{PREFIX}moosicbox-tokens"
REVOKED_KEY = f"{PREFIX}moosicbox-revoked"

# Store a token (KEYS[1] hash, KEYS[2] the client's set) and keep only the newest ARGV[5] of
# its kind (0: all), in one step so that two nodes minting at once cannot exceed the bound.
MINT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3] .. ':' .. ARGV[1])
local keep = tonumber(ARGV[5])
if keep > 0 then
  local prefix = ARGV[3] .. ':'
  local seen = 0
  for _, member in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix then
      seen = seen + 1
      if seen > keep then
        redis.call('ZREM', KEYS[2], member)
        redis.call('HDEL', KEYS[1], string.sub(member, #prefix + 1))
      end
    end
  end
end
return 1
"""

# Revoke every token of a client (KEYS[2]) and record when (KEYS[3]); 1 if it had an access
# token (it was registered).
REVOKE = """
local known = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local sep = string.find(member, ':', 1, true)
  if string.sub(member, 1, sep - 1) == 'access' then known = 1 end
  redis.call('HDEL', KEYS[1], string.sub(member, sep + 1))
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return known
"""


def client_key(client_id: str) -> str:
    """A MoosicBox client's tokens: ``kind:hash`` members scored by creation time."""
    return f"{PREFIX}moosicbox-client:{client_id}"


class TokenEntry(msgspec.Struct, array_like=True):
    """A token as Redis holds it (under its hash)."""

    kind: str
    client_id: str
    created_at: float
    expires: float | None


def _row(hashed: str, value: bytes) -> TokenRow:
    entry = msgspec.msgpack.decode(value, type=TokenEntry)
    return TokenRow(hashed, entry.kind, entry.client_id, entry.created_at, entry.expires)


class SharedTokens:
    """This node's view of the cluster's MoosicBox tokens (its SQLite tokens as a copy)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def tokens(self) -> MoosicBoxTokens:
        return self.cluster.hub.tunnels.registry.moosicbox

    def _redis(self) -> coredis.Redis[bytes]:
        redis = self.cluster.redis
        if redis is None:
            raise ClusterUnavailable
        return redis

    def _failed(self, exc: BaseException) -> ClusterUnavailable:
        self.cluster._fault(f"moosicbox tokens: {exc!r}")
        return ClusterUnavailable()

    async def link(self, redis: coredis.Redis[bytes]) -> None:
        """On linking up: add the tokens only this node knows (unless their client was revoked
        since), then take Redis's word for every token."""
        revoked = {
            key.decode(): float(value) for key, value in (await redis.hgetall(REVOKED_KEY)).items()
        }
        rows = [
            row
            for row in self.tokens.rows()
            if row.created_at > revoked.get(row.client_id, float("-inf"))
        ]
        if rows:
            async with redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    entry = TokenEntry(row.kind, row.client_id, row.created_at, row.expires)
                    pipe.hsetnx(TOKENS_KEY, row.token_hash, msgspec.msgpack.encode(entry))
                    name: str | bytes = f"{row.kind}:{row.token_hash}"
                    member = {name: row.created_at}
                    pipe.zadd(client_key(row.client_id), member, condition=PureToken.NX)
        self._replace(await redis.hgetall(TOKENS_KEY))

    async def pull(self) -> None:
        """Bring the local copy up to date with Redis (kept as it is when Redis is away)."""
        try:
            redis = self._redis()
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                found = await redis.hgetall(TOKENS_KEY)
        except ClusterUnavailable:
            return
        except FAULTS as exc:
            self._failed(exc)
            return
        self._replace(found)

    def _replace(self, found: dict[bytes, bytes]) -> None:
        self.tokens.replace_all([_row(key.decode(), value) for key, value in found.items()])

    async def sync(self, token: str | None) -> None:
        """Before a check: bring ``token``'s local copy up to date with Redis, if reachable
        (issued on another node: copied; revoked there: dropped)."""
        if not token:
            return
        hashed = token_hash(token)
        try:
            redis = self._redis()
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                value = await redis.hget(TOKENS_KEY, hashed)
        except ClusterUnavailable:
            return  # the local copy decides
        except FAULTS as exc:
            self._failed(exc)
            return
        if value is None:
            self.tokens.forget(hashed)
        else:
            self.tokens.put(_row(hashed, value))

    async def mint(
        self, kind: TokenKind, client_id: str, token: str | None = None, keep: int = 0
    ) -> str:
        """Issue a token on every node (as ``MoosicBoxTokens.mint``); ClusterUnavailable."""
        token = token or str(uuid.uuid4())
        now = time.time()
        expires = now + SIGNATURE_LIFETIME if kind == "signature" else None
        entry = msgspec.msgpack.encode(TokenEntry(kind, client_id, now, expires))
        args: list[str | bytes] = [token_hash(token), entry, kind, repr(now), str(keep)]
        await self._eval(MINT, [TOKENS_KEY, client_key(client_id)], args)
        return self.tokens.mint(kind, client_id, token, keep=keep)

    async def exists(self, client_id: str) -> bool:
        """Whether ``client_id`` is registered anywhere in the cluster; ClusterUnavailable."""
        redis = self._redis()
        try:
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                members = await redis.zrange(client_key(client_id), 0, -1)
        except FAULTS as exc:
            raise self._failed(exc) from None
        return any(member.startswith(b"access:") for member in members)

    async def remove(self, client_id: str) -> bool:
        """Revoke every token of ``client_id`` on every node and close its sender wherever it
        is; False if it was not registered. ClusterUnavailable."""
        args: list[str | bytes] = [client_id, repr(time.time())]
        known = await self._eval(REVOKE, [TOKENS_KEY, client_key(client_id), REVOKED_KEY], args)
        known = bool(known) | self.tokens.remove(client_id)
        if known:
            await self._drop_sender(client_id, "client removed")
        return known

    async def rotate(self, client_id: str) -> str:
        """Replace every token of ``client_id`` with one new access token on every node,
        closing its sender wherever it is; KeyError if unknown. ClusterUnavailable."""
        if not await self.exists(client_id) and not self.tokens.exists(client_id):
            raise KeyError(client_id)
        await self.remove(client_id)
        return await self.mint("access", client_id)

    async def _drop_sender(self, client_id: str, reason: str) -> None:
        node = await self.cluster.sender_node(client_id)
        if node is not None:
            self.cluster.drop_agent(node, client_id, closecodes.KICKED, reason, moosicbox=True)

    async def _eval(self, script: str, keys: list[str], args: list[str | bytes]) -> object:
        redis = self._redis()
        try:
            with trio.fail_after(self.cluster.hub.config.cluster.request_timeout):
                return await redis.eval(script, keys, args)
        except FAULTS as exc:
            raise self._failed(exc) from None
