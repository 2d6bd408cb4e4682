"""A MoosicBox-format sender and caller for tests, written from the MoosicBox wire description
(not from wstund's codec): what a MoosicBox server's tunnel sender does on its socket.

The sender keeps ``/ws?clientId=&sender=true&signature=`` open, answers each ``HTTP`` frame
from a real local HTTP app, and writes the response as binary packets
``u64 request_id | u32 packet_id | u8 last`` (+ ``u16 status | u32 header_len | headers`` on
packet 1), each at most 64 KiB with its head; the packet during which the body ends is last.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
import trio_websocket

from .conftest import RunningDaemon

PACKET_SIZE = 65536
ADMIN = "admin-secret"


def packets(request_id: int, status: int, headers: dict[str, str], body: bytes) -> list[bytes]:
    """A response as a MoosicBox sender packs it (sender.rs send_binary_stream)."""
    head_json = json.dumps(dict(sorted(headers.items())), separators=(",", ":")).encode()
    out: list[bytes] = []
    packet_id = 1
    rest = body
    while True:
        head = struct.pack(">QIB", request_id, packet_id, 0)
        if packet_id == 1:
            head += struct.pack(">HI", status, len(head_json)) + head_json
        room = PACKET_SIZE - len(head)
        if len(rest) > room:  # more follows: a full packet, not the last
            out.append(head + rest[:room])
            rest = rest[room:]
            packet_id += 1
            continue
        out.append(head[:12] + b"\x01" + head[13:] + rest)
        return out


@dataclass
class Frame:
    """An ``HTTP`` frame as received, raw text and parsed."""

    text: str
    data: dict[str, Any]


Order = Callable[[list[bytes]], list[bytes]]
Handler = Callable[["FakeSender", Frame], Awaitable[None]]


def in_order(parts: list[bytes]) -> list[bytes]:
    return parts


def last_first(parts: list[bytes]) -> list[bytes]:
    return [parts[-1], *parts[:-1]]


def pairs_swapped(parts: list[bytes]) -> list[bytes]:
    swapped: list[bytes] = []
    for i in range(0, len(parts), 2):
        swapped.extend(reversed(parts[i : i + 2]))
    return swapped


@dataclass
class FakeSender:
    """One sender connection; ``handler`` answers HTTP frames (default: the local app)."""

    ws: trio_websocket.WebSocketConnection
    local_url: str
    order: Order = in_order
    handler: Handler | None = None
    http_frames: list[Frame] = field(default_factory=list)
    ws_frames: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[int] = field(default_factory=list)
    got_http: trio.Event = field(default_factory=trio.Event)
    got_ws: trio.Event = field(default_factory=trio.Event)
    got_abort: trio.Event = field(default_factory=trio.Event)

    async def serve(self, nursery: trio.Nursery) -> None:
        """Read frames until the socket closes; each HTTP frame handled in its own task."""
        try:
            while True:
                text = await self.ws.get_message()
                data = json.loads(text)
                if data["type"] == "HTTP":
                    frame = Frame(text, data)
                    self.http_frames.append(frame)
                    self.got_http.set()
                    nursery.start_soon(self.handler or FakeSender.answer_from_app, self, frame)
                elif data["type"] == "WS":
                    self.ws_frames.append(data)
                    self.got_ws.set()
                elif data["type"] == "ABORT":
                    self.aborted.append(data["request_id"])
                    self.got_abort.set()
        except trio_websocket.ConnectionClosed:
            return

    async def answer_from_app(self, frame: Frame) -> None:
        """What the sender does: replay the request on the local server, pack the answer."""
        data = frame.data
        query = "&".join(f"{k}={v}" for k, v in data["query"].items())
        headers = dict(data.get("headers") or {})
        headers["user-agent"] = "MOOSICBOX_TUNNEL"
        if data.get("profile") is not None:
            headers["moosicbox-profile"] = data["profile"]
        kwargs: dict[str, Any] = {"headers": headers}
        if "payload" in data:
            kwargs["json"] = data["payload"]
        async with httpx.AsyncClient() as http:
            response = await http.request(
                data["method"], f"{self.local_url}/{data['path']}?{query}", **kwargs
            )
        await self.respond(
            data["request_id"], response.status_code, dict(response.headers), response.content
        )

    async def respond(
        self, request_id: int, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        """Send a whole response as packets, in ``self.order``."""
        for packet in self.order(packets(request_id, status, headers, body)):
            await self.ws.send_message(packet)

    async def push(self, body: Any, request_id: int = 0, **routing: list[int]) -> None:
        """A text frame for app sockets (TunnelWsResponse)."""
        await self.ws.send_message(json.dumps({"request_id": request_id, "body": body, **routing}))


async def register(
    daemon: RunningDaemon | str, client_id: str, signer: RunningDaemon | None = None
) -> tuple[str, str]:
    """Register ``client_id`` with the admin token on ``daemon`` (or a base URL, such as a load
    balancer's), fetch a signature token (through ``signer`` if given): (access, signature), as
    a MoosicBox server does (raw Authorization headers)."""
    base = daemon if isinstance(daemon, str) else daemon.url
    async with httpx.AsyncClient() as http:
        with trio.fail_after(5):
            r = await http.post(
                f"{base}/auth/register-client?clientId={client_id}",
                headers={"Authorization": ADMIN},
            )
            assert r.status_code == 200, r.text
            access = r.json()["token"]
            r = await http.post(
                f"{signer.url if signer else base}/auth/signature-token?clientId={client_id}",
                headers={"Authorization": access},
            )
            assert r.status_code == 200, r.text
    return access, r.json()["token"]


async def connect_sender(
    daemon: RunningDaemon, client_id: str, signature: str, local_url: str, **kwargs: Any
) -> FakeSender:
    """Open the sender socket and serve it in the daemon's nursery."""
    ws = await trio_websocket.connect_websocket_url(
        daemon.nursery,
        daemon.ws_url("/ws", f"clientId={client_id}&sender=true&signature={signature}"),
    )
    sender = FakeSender(ws, local_url, **kwargs)
    daemon.nursery.start_soon(sender.serve, daemon.nursery)
    await wait_sender(daemon, client_id, ws)
    return sender


async def wait_sender(daemon: RunningDaemon, client_id: str, ws: Any = None) -> None:
    """Wait until the daemon serves ``client_id``'s sender (the socket's handler has run)."""
    with trio.fail_after(5):
        while client_id not in daemon.hub.moosicbox.senders:
            await trio.sleep(0.01)
