"""What nodes say to each other over Redis pub/sub: a sans-I/O msgpack codec.

Each node listens on one channel of its own. A published message is a ``Batch``: the frames it
carries (each once, however many recipients share it) and the operations, in order. Relayed
frames travel as the exact text or bytes the owning node's members and owner see.
"""

from __future__ import annotations

from typing import Any

import msgspec

Frame = str | bytes


class Deliver(msgspec.Struct, tag="d", array_like=True):
    """Offer ``frames[frame]`` to the local peer ``peer`` (a member of a remote room)."""

    peer: int
    frame: int


class Close(msgspec.Struct, tag="c", array_like=True):
    """Close the local peer ``peer`` with ``code`` (kick, room closed)."""

    peer: int
    code: int
    reason: str


class Join(msgspec.Struct, tag="j", array_like=True):
    """Ask the owning node to seat ``peer`` (of the sending node) in room ``uuid``."""

    request: int
    peer: int
    uuid: str
    service: str | None
    token: str | None
    user_id: str | None


class JoinReply(msgspec.Struct, tag="J", array_like=True):
    """The owning node's answer: ``code`` empty when seated as ``user_id`` in room ``name``."""

    request: int
    peer: int
    uuid: str
    user_id: str
    name: str
    code: str = ""
    message: str = ""


class FromMember(msgspec.Struct, tag="m", array_like=True):
    """A frame from member ``peer`` (of the sending node) to its room on the owning node."""

    uuid: str
    peer: int
    frame: int


class Leave(msgspec.Struct, tag="l", array_like=True):
    """Member ``peer`` (of the sending node) left room ``uuid``."""

    uuid: str
    peer: int


class Reclaim(msgspec.Struct, tag="r", array_like=True):
    """Ask the node holding room ``uuid`` to make ``peer`` (of the sending node) its owner."""

    request: int
    peer: int
    uuid: str
    service: str | None
    token: str | None
    owner_key: str | None
    browser_key: str | None


class ReclaimReply(msgspec.Struct, tag="R", array_like=True):
    """The answer: ``code`` empty when reclaimed; ``failed`` for the reference's
    ``instance_reclaimed {success: false}`` form rather than an ``error``."""

    request: int
    peer: int
    uuid: str
    code: str = ""
    message: str = ""
    failed: bool = False
    name: str = ""
    has_token: bool = False
    user_count: int = 0
    owner_key: str = ""


class FromOwner(msgspec.Struct, tag="o", array_like=True):
    """A frame from the owner ``peer`` (of the sending node) to its room's members (``to``)."""

    uuid: str
    peer: int
    to: list[str] | None
    frame: int
    msg_id: str | int | None = None


class Kick(msgspec.Struct, tag="k", array_like=True):
    """The owner ``peer`` (of the sending node) kicks ``user_id`` from room ``uuid``."""

    uuid: str
    peer: int
    user_id: str
    msg_id: str | int | None = None


class OwnerLeft(msgspec.Struct, tag="L", array_like=True):
    """The owner ``peer`` (of the sending node) of room ``uuid`` disconnected."""

    uuid: str
    peer: int


class Disown(msgspec.Struct, tag="D", array_like=True):
    """Room ``uuid`` is gone: local peer ``peer`` owns it no more."""

    uuid: str
    peer: int


class DropAgent(msgspec.Struct, tag="A", array_like=True):
    """Close this node's agent for ``client_id``: another agent connected elsewhere and
    replaces it (4009), or its client was removed or its secret rotated (4003)."""

    client_id: str
    code: int = 4009
    reason: str = "replaced by a new agent"
    moosicbox: bool = False  # a MoosicBox sender rather than an agent


class CloseRoom(msgspec.Struct, tag="C", array_like=True):
    """An admin on another node closes room ``uuid`` (held here) for ``reason``."""

    uuid: str
    reason: str


class AdminAsk(msgspec.Struct, tag="q", array_like=True):
    """An admin on another node acts on this node's rooms: ``describe`` room ``uuid``, or
    ``kick`` ``user_id`` from room ``uuid`` (from any room of ``service`` when ``uuid`` is "")."""

    ask: int
    action: str
    service: str
    uuid: str
    user_id: str


class AdminAnswer(msgspec.Struct, tag="Q", array_like=True):
    """The answer to ``AdminAsk`` ``ask``: the HTTP status and JSON body the asked node gave."""

    ask: int
    status: int
    body: bytes


Op = (
    Deliver
    | Close
    | Join
    | JoinReply
    | FromMember
    | Leave
    | Reclaim
    | ReclaimReply
    | FromOwner
    | Kick
    | OwnerLeft
    | Disown
    | DropAgent
    | CloseRoom
    | AdminAsk
    | AdminAnswer
)


class Batch(msgspec.Struct, array_like=True):
    """One published message: the sending node, its frames and its operations in order."""

    node: str
    frames: list[Any]  # str or bytes: msgpack keeps them apart (msgspec cannot type the union)
    ops: list[Op]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Batch)


def encode(batch: Batch) -> bytes:
    """Encode a batch for PUBLISH."""
    return _encoder.encode(batch)


def decode(data: bytes) -> Batch:
    """Decode a published batch (raises msgspec.DecodeError on garbage)."""
    return _decoder.decode(data)


class BatchBuilder:
    """Collects operations for one node, storing each distinct frame object once."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.frames: list[Frame] = []
        self.ops: list[Op] = []
        self._index: dict[int, int] = {}

    def frame(self, frame: Frame) -> int:
        """The index of ``frame`` in this batch (added on first use, by identity)."""
        key = id(frame)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.frames)
            self.frames.append(frame)
        return index

    def build(self) -> Batch:
        """The batch collected so far."""
        return Batch(self.node, self.frames, self.ops)
