"""Stand-ins for what lives on another node, so rooms and peers need no cluster code.

On the owning node a member connected elsewhere is a ``RemoteMember`` seated in the room like a
local peer: what the room offers it is published to the member's node. On the member's node the
room is a ``RemoteRoom`` in ``peer.joined``: what the member sends is published to the owner's
node, where the real room relays it as it relays local frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from . import wire

if TYPE_CHECKING:
    from ..relay.instance import Instance
    from ..relay.peer import Peer


class Outbound(Protocol):
    """Where the stand-ins send operations (the cluster's ordered publisher)."""

    def send(self, node: str, op: wire.Op, frame: wire.Frame | None = None) -> None: ...

    def forget_peer(self, peer: Peer) -> None: ...

    def forget_member(self, member: RemoteMember) -> None: ...

    def forget_owner(self, peer: Peer, uuid: str) -> None: ...


class RemoteMember:
    """A member of a local room whose socket is on node ``node`` (as peer ``peer_id`` there)."""

    def __init__(self, out: Outbound, node: str, peer_id: int, user_id: str) -> None:
        self._out = out
        self.node = node
        self.peer_id = peer_id
        self.user_id: str | None = user_id
        self.joined: Instance | None = None
        self.close_code: int | None = None
        self.address = f"node:{node}"

    def __repr__(self) -> str:
        return f"<RemoteMember {self.node}/{self.peer_id} user={self.user_id!r}>"

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def offer(self, frame: wire.Frame) -> None:
        """Publish ``frame`` to the member's node, in order behind what was offered before."""
        if self.close_code is None:
            self._out.send(self.node, wire.Deliver(self.peer_id, 0), frame)

    def close(self, code: int, reason: str) -> None:
        """Ask the member's node to close the member's socket with ``code``."""
        if self.close_code is None:
            self.close_code = code
            self._out.send(self.node, wire.Close(self.peer_id, code, reason))
            self._out.forget_member(self)


class RemoteOwner:
    """The owner of a local room whose socket is on node ``node`` (it reclaimed it there)."""

    def __init__(self, out: Outbound, node: str, peer_id: int, browser_key: str | None) -> None:
        self._out = out
        self.node = node
        self.peer_id = peer_id
        self.browser_key = browser_key
        self.owned: dict[str, Instance] = {}
        self.close_code: int | None = None

    def __repr__(self) -> str:
        return f"<RemoteOwner {self.node}/{self.peer_id}>"

    def offer(self, frame: wire.Frame) -> None:
        """Publish ``frame`` to the owner's node, in order behind what was offered before."""
        self._out.send(self.node, wire.Deliver(self.peer_id, 0), frame)


class OwnedRemoteRoom:
    """A room held on node ``node`` that a local peer owns (it reclaimed it here)."""

    def __init__(self, out: Outbound, node: str, uuid: str, name: str, owner: Peer) -> None:
        self._out = out
        self.node = node
        self.uuid = uuid
        self.name = name
        self.owner: Peer | None = owner
        self.peer = owner  # kept when ``owner`` is cleared (Hub.detach does, with no grace)
        self.destroyed_reason: str | None = None
        self.members: dict[str, Any] = {}  # on the room's node
        self._left = False

    def __repr__(self) -> str:
        return f"<OwnedRemoteRoom {self.uuid} on {self.node}>"

    def from_owner(self, frame: wire.Frame, to: list[str] | None) -> list[str]:
        """Publish an owner's frame to the room's node; unknown user ids are answered from
        there (an ``error`` with ``user_not_found``)."""
        self._out.send(self.node, wire.FromOwner(self.uuid, self.peer.id, to, 0), frame)
        return []

    def kick(self, user_id: str, msg_id: str | int | None) -> None:
        """Kick a member (the room's node answers ``user_not_found`` if there is none)."""
        self._out.send(self.node, wire.Kick(self.uuid, self.peer.id, user_id, msg_id))

    def owner_left(self, grace: float) -> None:
        """The local owner disconnected: the room's node starts its grace period (its own)."""
        if not self._left:
            self._left = True
            self._out.send(self.node, wire.OwnerLeft(self.uuid, self.peer.id))
            self._out.forget_owner(self.peer, self.uuid)
            self.owner = None

    def destroy(self, reason: str, member_close: int = 0) -> None:
        """Only an owner leaving with no grace period ends here: as ``owner_left``."""
        self.destroyed_reason = reason
        self.owner_left(0)


class RemoteRoom:
    """The room a local member joined on the owning node ``node``."""

    def __init__(self, out: Outbound, node: str, uuid: str, name: str) -> None:
        self._out = out
        self.node = node
        self.uuid = uuid
        self.name = name
        self.members: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<RemoteRoom {self.uuid} on {self.node}>"

    async def from_member(self, peer: Peer, frame: wire.Frame, timeout: float) -> bool:
        """Publish a member's (already stamped) frame to the owner's node."""
        self._out.send(self.node, wire.FromMember(self.uuid, peer.id, 0), frame)
        return True

    def remove_member(self, peer: Peer, msg_id: object = None) -> None:
        """The local member left: tell the owning node (it tells the owner)."""
        if peer.joined is self:  # type: ignore[comparison-overlap]
            peer.joined = None
            self._out.forget_peer(peer)
            self._out.send(self.node, wire.Leave(self.uuid, peer.id))
