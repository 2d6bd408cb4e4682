"""An Instance (room): its owner, its members, its inbox and its own nursery.

Member → owner traffic goes through the instance's bounded inbox, pumped to the owner by a
task in the instance's nursery (it holds frames while the owner is away within the grace
period). Owner → member and member → member traffic goes straight to each member's outbox.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import trio

from .. import closecodes
from . import ownership, protocol
from .budget import BudgetClosed, ByteBudget
from .peer import Frame, Peer


class Instance:
    """A running room of one service."""

    def __init__(
        self,
        uuid: str,
        service: str,
        name: str,
        token: str | None,
        owner: Peer,
        *,
        inbox_size: int,
        inbox_bytes: int,
        on_destroyed: Callable[[Instance], None],
    ) -> None:
        self.uuid = uuid
        self.service = service
        self.name = name
        self._token = token or None
        self.owner: Peer | None = owner
        # Proof of ownership for reclaim_instance: the key handed to the owner, and the browser
        # key of the socket that created (or last reclaimed) the room.
        self.owner_key = ownership.new_key()
        self.owner_browser = owner.browser_key
        self.members: dict[str, Peer] = {}
        self.created_at = int(time.time() * 1000)
        self.messages_in = 0
        self.destroyed_reason: str | None = None
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[Frame](inbox_size)
        self.inbox_bytes = ByteBudget(inbox_bytes)
        self._owner_back = trio.Event()
        self._owner_back.set()
        self._grace_scope: trio.CancelScope | None = None
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._on_destroyed = on_destroyed

    @property
    def has_token(self) -> bool:
        """Whether joining (and reclaiming) needs the instance token."""
        return self._token is not None

    def token_matches(self, token: str | None) -> bool:
        """Constant-time check of a join/reclaim token."""
        if self._token is None:
            return True
        return hmac.compare_digest((token or "").encode(), self._token.encode())

    def may_reclaim(self, peer: Peer, owner_key: str | None) -> bool:
        """Whether ``peer`` proves it owns the room: its ``ownerKey``, or else its browser's key."""
        if owner_key is not None:
            return ownership.same(owner_key, self.owner_key)
        return ownership.same(peer.browser_key, self.owner_browser)

    @property
    def owner_connected(self) -> bool:
        return self.owner is not None

    def describe(self) -> dict[str, Any]:
        """The reference ``instance_list`` entry."""
        return {
            "uuid": self.uuid,
            "service": self.service,
            "name": self.name,
            "hasToken": self.has_token,
            "createdAt": self.created_at,
            "userCount": len(self.members),
            "ownerConnected": self.owner_connected,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The instance's task tree: the inbox pump and, while the owner is away, its timer."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._pump_inbox)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            # The tree is gone (destroyed, or the daemon cancelled): nothing may start in it.
            self._nursery = None

    async def _pump_inbox(self) -> None:
        async for frame in self._inbox_recv:
            await self._owner_back.wait()
            if self.owner is not None:
                self.owner.offer(frame)
            self.inbox_bytes.give_back(len(frame))

    # -- members ----------------------------------------------------------------------------

    def add_member(self, user_id: str, peer: Peer) -> None:
        """Seat ``peer`` as ``user_id`` and tell the owner."""
        self.members[user_id] = peer
        peer.joined, peer.user_id = self, user_id
        if self.owner is not None:
            self.owner.offer(
                protocol.encode("client_connected", {"userId": user_id, "instanceUuid": self.uuid})
            )

    def remove_member(self, peer: Peer, msg_id: protocol.MessageId | None = None) -> None:
        """Unseat ``peer`` and tell the owner with ``client_disconnected``."""
        user_id = peer.user_id
        if user_id is None or self.members.get(user_id) is not peer:
            return
        del self.members[user_id]
        peer.joined = None
        if self.owner is not None:
            self.owner.offer(
                protocol.encode(
                    "client_disconnected", {"userId": user_id, "instanceUuid": self.uuid}, msg_id
                )
            )

    async def from_member(self, peer: Peer, frame: Frame, timeout: float) -> bool:
        """Relay a member's frame to the other members and, through the inbox, to the owner.

        The inbox is bounded in frames and in bytes (``relay.max_inbox_bytes``): a member
        past the bound waits (its socket is not read meanwhile). Returns False when the
        owner's inbox stayed full for ``timeout`` seconds.
        """
        self.messages_in += 1
        for other in list(self.members.values()):
            if other is not peer:
                other.offer(frame)
        size = len(frame)
        if self.inbox_bytes.try_take(size):  # the common case: room at once, no waiting
            try:
                self._inbox_send.send_nowait(frame)
                return True
            except trio.WouldBlock:
                self.inbox_bytes.give_back(size)
            except trio.ClosedResourceError:
                return True  # destroyed: the member got instance_destroyed and 4004
        try:
            with trio.move_on_after(timeout):
                await self.inbox_bytes.take(size)
                try:
                    self._inbox_send.send_nowait(frame)
                except trio.WouldBlock:
                    try:
                        await self._inbox_send.send(frame)
                    except BaseException:
                        self.inbox_bytes.give_back(size)
                        raise
                return True
        except (BudgetClosed, trio.ClosedResourceError):
            return True  # destroyed meanwhile: the member got instance_destroyed and 4004
        return False

    def from_owner(self, frame: Frame, to: list[str] | None) -> list[str]:
        """Relay an owner's frame to every member, or to the ``to`` user ids; return unknown ids."""
        self.messages_in += 1
        if to is None:
            for member in list(self.members.values()):
                member.offer(frame)
            return []
        missing: list[str] = []
        for user_id in dict.fromkeys(to):
            target = self.members.get(user_id)
            if target is None:
                missing.append(user_id)
            else:
                target.offer(frame)
        return missing

    def broadcast(self, frame: Frame) -> None:
        """Send a server message to every member."""
        for member in list(self.members.values()):
            member.offer(frame)

    # -- owner ------------------------------------------------------------------------------

    def owner_left(self, grace: float) -> None:
        """The owner's socket dropped: keep the room for ``grace`` seconds, tell the members."""
        self.owner = None
        self._owner_back = trio.Event()
        self.broadcast(
            protocol.encode(
                "owner_disconnected", {"instanceUuid": self.uuid, "graceSeconds": grace}
            )
        )
        if self._nursery is not None:
            try:
                self._nursery.start_soon(self._grace_timer, grace)
            except RuntimeError:  # the tree is ending (daemon cancelled): no timer to start
                pass

    async def _grace_timer(self, grace: float) -> None:
        with trio.CancelScope() as scope:
            self._grace_scope = scope
            await trio.sleep(grace)
            self.destroy("owner_gone")

    def reclaim(self, owner: Peer) -> None:
        """The owner came back in time: cancel the timer, deliver what the inbox held."""
        self.owner = owner
        self.owner_browser = owner.browser_key
        if self._grace_scope is not None:
            self._grace_scope.cancel()
            self._grace_scope = None
        self._owner_back.set()
        self.broadcast(protocol.encode("owner_reconnected", {"instanceUuid": self.uuid}))

    # -- end --------------------------------------------------------------------------------

    def destroy(self, reason: str, member_close: int = closecodes.ROOM_CLOSED) -> None:
        """Close the room: owner and members get ``instance_destroyed``; members close (4004)."""
        if self.destroyed_reason is not None:
            return
        self.destroyed_reason = reason
        message = protocol.encode("instance_destroyed", {"uuid": self.uuid, "reason": reason})
        if self.owner is not None:
            self.owner.owned.pop(self.uuid, None)
            self.owner.offer(message)
        members, self.members = list(self.members.values()), {}
        for member in members:
            member.joined = None
            member.offer(message)
            member.close(member_close, f"instance closed: {reason}")
        self._on_destroyed(self)
        self._scope.cancel()
        self._inbox_send.close()
        self.inbox_bytes.close()
