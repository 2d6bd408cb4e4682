"""The agent socket (``/_tunnel/connect``) on the lean WebSocket lane.

``LaneServerWebSocket`` gives a lane socket the interface of ``ServerWebSocket``, so that
``TunnelFront.serve_agent`` and the session run on it unchanged. A lane write is never torn:
a send cancelled part-way (an ABORT cancelling its stream) leaves the rest of the frame to go
before the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ..cluster.forward import restore_host
from ..httpheaders import to_bytes
from ..transport.head import Head
from ..transport.websocket import LaneSocket
from .asgi import RawHeaders, ServerWebSocket, WebSocketClosed
from .front import CONNECT_PATH, TunnelFront
from .proxy import route as tunnel_route

if TYPE_CHECKING:
    from ..transport.server import LaneHandler

NO_STATUS = 1005


async def _no_asgi(*args: Any) -> NoReturn:
    raise RuntimeError("a lane socket has no ASGI channel")


class LaneServerWebSocket(ServerWebSocket):
    """``ServerWebSocket`` on a lane socket; ``scope`` carries the head's path, query and
    headers (what the agent's credentials are read from)."""

    def __init__(self, ws: LaneSocket, head: Head, address: str) -> None:
        scope = {
            "type": "websocket",
            "client": (address, 0),
            "path": head.path,
            "query_string": head.query.encode("latin-1"),
            "headers": head.headers,
            "extensions": {"websocket.http.response": {}},
        }
        super().__init__(scope, _no_asgi, _no_asgi)
        self._ws = ws

    async def wait_connect(self) -> bool:
        """The upgrade request is there already."""
        return True

    async def accept(
        self, subprotocol: str | None = None, headers: RawHeaders | None = None
    ) -> None:
        """Complete the handshake (no subprotocol or extra headers: the agent asks for none)."""
        await self._ws.accept(permessage_deflate=False)
        self.accepted = True

    async def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Refuse the handshake with an HTTP response."""
        self.closed = True
        await self._ws.reject(status, to_bytes(headers), body)

    async def receive(self) -> str | bytes:
        """The next message; WebSocketClosed when the peer is gone."""
        message = await self._ws.receive()
        if message is None:
            self.closed = True
            raise WebSocketClosed(self._ws.close_code or NO_STATUS)
        return message

    async def send(self, data: str | bytes) -> None:
        """Send one message (dropped once the socket is closed)."""
        await self._ws.write([self._ws.encode(data)])

    async def send_many(self, messages: list[str | bytes]) -> None:
        """Send several messages in one write: one system call, one wake-up of the agent."""
        await self._ws.write([self._ws.encode(data) for data in messages])

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` (idempotent)."""
        if self.closed:
            return
        self.closed = True
        await self._ws.close(code, reason[:120])


def agent_lane_route(front: TunnelFront) -> Callable[[Head], LaneHandler | None]:
    """The lean lane's router for agent sockets: ``/_tunnel/connect`` upgrades, except on a
    tunnel's own host (where every path is the tunnel's)."""

    async def handler(ws: LaneSocket, head: Head, address: str) -> None:
        await front.serve_agent(LaneServerWebSocket(ws, head, address))

    def route(head: Head) -> LaneHandler | None:
        if not head.is_websocket_upgrade or head.path != CONNECT_PATH:
            return None
        scope = {"type": "websocket", "path": head.path, "headers": head.headers}
        if front.hub.cluster is not None:  # carried from another node: the caller's Host
            restore_host(scope, front.hub.config.cluster.secret)
        if tunnel_route(scope, front.hub.config.tunnel.host_suffix) is not None:
            return None
        return handler

    return route
