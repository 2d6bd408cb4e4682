"""What a node keeps in Redis: its heartbeat, its rooms and its agents, each under a key with
a TTL of ``node_ttl`` that the node refreshes, and the names of the keys and channels.

Listings never scan the keyspace: ``NODES`` names every node that registered and did not leave
(a node whose heartbeat key is gone is dead, and is dropped from it by whoever sees that), and
each node keeps its rooms' listing entries in a hash of its own, beside the per-room keys that
lookups by uuid read."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import msgspec

PREFIX = "wstund:"


def node_key(node: str) -> str:
    return f"{PREFIX}node:{node}"


def room_key(uuid: str) -> str:
    return f"{PREFIX}room:{uuid}"


NODES = f"{PREFIX}nodes"  # a set of node ids; each is alive while its node_key exists


def node_rooms_key(node: str) -> str:
    """A node's rooms: a hash of uuid -> RoomEntry, with the node's TTL."""
    return f"{PREFIX}node-rooms:{node}"


def tunnel_key(client_id: str) -> str:
    return f"{PREFIX}tunnel:{client_id}"


# Delete KEYS[1] only while it still names this node (ARGV[1]): an agent that left here may
# be on another node already, whose entry must stay.
DELETE_IF_OURS = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def sender_key(client_id: str) -> str:
    """A MoosicBox sender's entry: the node its socket is on."""
    return f"{PREFIX}moosicbox:{client_id}"


def channel(node: str) -> str:
    return f"{PREFIX}to:{node}"


def load_node_id(state_dir: Path) -> str:
    """This node's id: ``state_dir/node-id``, written with a new random id the first time."""
    path = state_dir / "node-id"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    node_id = f"node-{secrets.token_hex(4)}"
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(node_id + "\n", encoding="utf-8")
    return node_id


class RoomEntry(msgspec.Struct):
    """A room as the registry holds it: its listing entry and the node holding it."""

    node: str
    room: dict[str, Any]


class NodeEntry(msgspec.Struct):
    """A node's heartbeat: how to reach it and what it holds."""

    node: str
    advertise_url: str
    started_at: float
    rooms: int
    members: int
    connections: int
