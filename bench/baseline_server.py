"""The floor wstund is measured against: a raw ``trio_websocket.serve_websocket`` server.

It does the least a relay can do, with no envelope parsing, no outboxes and no framework:
``/echo`` echoes every message; ``/owner/ROOM`` and ``/member/ROOM`` form a room where the
owner's messages go to every member and a member's message goes to the owner and the other
members, each sent in turn from the sender's own task. A member is told ``joined`` once seated.

Run by bench/relay.py as its own process: ``python bench/baseline_server.py PORT``.
"""

from __future__ import annotations

import argparse
import resource
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


class Room:
    """One owner and its members."""

    def __init__(self) -> None:
        self.owner: WebSocketConnection | None = None
        self.members: set[WebSocketConnection] = set()


async def send_to(targets: list[WebSocketConnection], message: str | bytes) -> None:
    """Send ``message`` to each target in turn; one gone away is skipped."""
    for target in targets:
        try:
            await target.send_message(message)
        except ConnectionClosed:
            pass


async def serve_owner(room: Room, ws: WebSocketConnection) -> None:
    room.owner = ws
    try:
        while True:
            message = await ws.get_message()
            await send_to(list(room.members), message)
    finally:
        if room.owner is ws:
            room.owner = None


async def serve_member(room: Room, ws: WebSocketConnection) -> None:
    room.members.add(ws)
    try:
        await ws.send_message("joined")
        while True:
            message = await ws.get_message()
            others = [m for m in room.members if m is not ws]
            await send_to([room.owner, *others] if room.owner else others, message)
    finally:
        room.members.discard(ws)


async def serve_echo(ws: WebSocketConnection) -> None:
    while True:
        await ws.send_message(await ws.get_message())


async def handle(rooms: dict[str, Room], request: WebSocketRequest) -> None:
    """Route one connection by its path."""
    ws = await request.accept()
    parts = request.path.strip("/").split("/")
    try:
        if parts == ["echo"]:
            await serve_echo(ws)
        elif len(parts) == 2 and parts[0] in ("owner", "member"):
            room = rooms.setdefault(parts[1], Room())
            await (serve_owner if parts[0] == "owner" else serve_member)(room, ws)
        else:
            await ws.aclose(1008, "unknown path")
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    rooms: dict[str, Room] = {}
    await serve_websocket(
        partial(handle, rooms), "127.0.0.1", port, ssl_context=None, max_message_size=1 << 20
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(main, parser.parse_args().port)
