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
