"""An ASGI app's WebSocket on the lean lane: the scope and messages Hypercorn's ``WSStream``
would give the app, over a ``LaneSocket``.

What the app sees (ASGI 3, WebSocket spec 2.3): ``websocket.connect``, ``websocket.receive``
(``bytes`` or ``text``, the other None) and ``websocket.disconnect`` with the peer's own close
code (1006 when the connection was lost or went silent past the idle timeout). What it may send:
``websocket.accept`` (``subprotocol``, ``headers``, and ``KEEPALIVE``: this socket's own ping
interval and idle timeout), ``websocket.send``, ``websocket.close`` (``code``, ``reason``) and
the denial response (``websocket.http.response.start`` / ``.body``). As with Hypercorn: a close
before the accept is an HTTP 403, an app that ends (or fails) before answering gives a 500, one
that ends with the socket open closes it with 1011, and messages sent once the socket is
closing are dropped.

The app is called from the connection's own task and reads the socket itself when it calls
``receive`` (one task per connection, no queue in between); the transport writes the access
line and sweeps keepalive for every lane socket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import trio
from hypercorn.utils import parse_socket_addr

from ..httpheaders import check_headers, from_bytes, to_bytes
from ..tunnel.asgi import json_body
from .head import Head
from .websocket import OWED, LaneSocket

if TYPE_CHECKING:
    from .server import LaneHandler, LaneRefusal

log = logging.getLogger("wstund.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# ``websocket.accept`` may carry KEEPALIVE: (ping_interval, idle_timeout) in seconds, 0 = off,
# overriding the lane's for that socket (MoosicBox sockets: 5 s / 10 s, as its own server).
KEEPALIVE = "wstund.websocket.keepalive"
NORMAL = 1000
NO_STATUS = 1005
ABNORMAL = 1006
INTERNAL_ERROR = 1011


def websocket_scope(head: Head, ws: LaneSocket) -> Scope:
    """The ASGI scope Hypercorn builds for an upgrade request (no lifespan ``state``: our app
    keeps none)."""
    path, _, query = head.target.partition(b"?")
    sock = ws.socket
    subprotocols = [
        token.strip()
        for name, value in head.headers
        if name == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]
    return {
        "type": "websocket",
        "asgi": {"spec_version": "2.3", "version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": head.headers,
        "client": parse_socket_addr(sock.family, sock.getpeername()),
        "server": parse_socket_addr(sock.family, sock.getsockname()),
        "subprotocols": subprotocols,
        "extensions": {"websocket.http.response": {}},
    }


class UnexpectedMessage(RuntimeError):
    """The app sent a message its socket's state does not allow (an app bug)."""


class LaneChannel:
    """The ``receive`` and ``send`` of one ASGI WebSocket on a lane socket."""

    def __init__(self, ws: LaneSocket, scope: Scope, permessage_deflate: bool) -> None:
        self.ws = ws
        self.scope = scope
        self.permessage_deflate = permessage_deflate
        self.connected = False  # websocket.connect given
        self.answered = trio.Event()  # accepted, refused or closed: the handshake is over
        self.closing = False  # we sent (or the app asked for) a close frame
        self.disconnected = False
        self._response: Message | None = None  # websocket.http.response.start
        self._body: list[bytes] = []

    async def receive(self) -> Message:
        """The next ASGI event: connect, then the peer's messages, then disconnect."""
        if not self.connected:
            self.connected = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        if self.disconnected:
            await trio.lowlevel.checkpoint()
            return self._disconnect()
        await self.answered.wait()  # no frame comes before the accept
        if not self.ws.accepted:  # refused: the HTTP answer ended it
            self.disconnected = True
            return self._disconnect()
        message = await self.ws.receive()
        if message is None:
            self.disconnected = True
            return self._disconnect()
        if isinstance(message, str):
            return {"type": "websocket.receive", "bytes": None, "text": message}
        return {"type": "websocket.receive", "bytes": message, "text": None}

    def _disconnect(self) -> Message:
        """The peer's close code; 1000 after our own close or a refusal, 1006 for a lost
        connection."""
        if self.closing or not self.ws.accepted:
            code = NORMAL
        else:
            code = self.ws.close_code if self.ws.close_code is not None else ABNORMAL
        return {"type": "websocket.disconnect", "code": code}

    async def send(self, message: Message) -> None:
        """Carry out one message of the app."""
        kind = message["type"]
        ws = self.ws
        if kind == "websocket.send":
            if not ws.open:
                await trio.lowlevel.checkpoint()
                if not ws.accepted and not self.answered.is_set():
                    raise UnexpectedMessage("websocket.send before websocket.accept")
                return  # closing or closed: dropped, as Hypercorn does
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                if not isinstance(text, str):
                    raise TypeError(f"{text!r} should be a str")
                data = text
            else:
                data = bytes(data)
            item = ws.encode(data)
            written = ws.write_nowait(item)
            if written == 0:
                await ws.write([item])
            elif written == OWED:
                await ws.write([])  # the rest of the frame, before anything else
            else:
                await trio.lowlevel.checkpoint()
        elif self.answered.is_set():
            await self._after_handshake(kind, message)
        elif kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.http.response.start":
            await trio.lowlevel.checkpoint()
            if self._response is not None:
                raise UnexpectedMessage("websocket.http.response.start sent twice")
            self._response = message
        elif kind == "websocket.http.response.body":
            await self._respond(message)
        elif kind == "websocket.close":
            await ws.reject(403, [], b"")  # a close before the accept: Hypercorn's 403
            self.answered.set()
        else:
            raise UnexpectedMessage(f"{kind} during the handshake")

    async def _after_handshake(self, kind: str, message: Message) -> None:
        if kind == "websocket.close" and self.ws.accepted:
            self.closing = True
            reason = message.get("reason") or ""
            await self.ws.close(int(message.get("code", NORMAL)), reason)
            return
        await trio.lowlevel.checkpoint()
        if kind == "websocket.close":
            return  # after a refusal: nothing left to close
        raise UnexpectedMessage(f"{kind} after the handshake")

    async def _accept(self, message: Message) -> None:
        headers = checked(message.get("headers") or [])
        if any(name.lower() == b"sec-websocket-protocol" for name, _ in headers):
            raise UnexpectedMessage("Sec-WebSocket-Protocol goes in the subprotocol key")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if subprotocol not in self.scope["subprotocols"]:
                raise UnexpectedMessage(f"subprotocol {subprotocol!r} was not offered")
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        keepalive = message.get(KEEPALIVE)
        if keepalive is not None:
            ping, idle = keepalive
            self.ws.keepalive = (float(ping or 0), float(idle or 0))
        await self.ws.accept(permessage_deflate=self.permessage_deflate, headers=headers)
        self.answered.set()

    async def _respond(self, message: Message) -> None:
        """Collect the denial's body; the whole response goes out with its last part."""
        if self._response is None:
            raise UnexpectedMessage("websocket.http.response.body before its start")
        self._body.append(bytes(message.get("body", b"")))
        if message.get("more_body", False):
            await trio.lowlevel.checkpoint()
            return
        status = int(self._response["status"])
        headers = [
            (name, value)
            for name, value in checked(self._response.get("headers") or [])
            if name.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        body = b"" if status in (204, 304) else b"".join(self._body)
        self._body = []
        await self.ws.reject(status, headers, body)
        self.answered.set()  # only now: an app may stop (Quart-Trio does) on the disconnect

    async def finish(self) -> None:
        """The app has ended: answer an unanswered upgrade (500), close an open socket
        (1011), as Hypercorn does."""
        if not self.answered.is_set():
            await self.ws.reject(500, [], b"")
            self.answered.set()
        elif self.ws.open and not self.closing:
            self.closing = True
            await self.ws.close(INTERNAL_ERROR, "")


def checked(headers: Any) -> list[tuple[bytes, bytes]]:
    """An app's raw response headers, validated as HTTP/1.1 (no header injection)."""
    pairs = [(bytes(name), bytes(value)) for name, value in headers]
    return to_bytes(check_headers(from_bytes(pairs)))


async def serve(app: ASGIApp, ws: LaneSocket, scope: Scope, permessage_deflate: bool) -> None:
    """Run ``app`` on ``ws`` until it returns; an app's failure is logged, and ends this socket
    only."""
    channel = LaneChannel(ws, scope, permessage_deflate)
    try:
        await app(scope, channel.receive, channel.send)
    except Exception:
        log.exception("error in the ASGI app serving WebSocket %s", scope.get("path", ""))
    await channel.finish()


def asgi_lane_route(
    app: ASGIApp, permessage_deflate: Callable[[], bool]
) -> Callable[[Head], LaneHandler | None]:
    """The lean lane's router for every other WebSocket upgrade: served by ``app`` (ASGI),
    with permessage-deflate when ``permessage_deflate()`` allows and the client offers it."""

    async def handler(ws: LaneSocket, head: Head, address: str) -> None:
        scope = websocket_scope(head, ws)
        del head  # the scope holds what the app may read
        await serve(app, ws, scope, permessage_deflate())

    def route(head: Head) -> LaneHandler | None:
        return handler if head.is_websocket_upgrade else None

    return route


def refuse_with_503(refuse: LaneRefusal, own: Callable[[Head], LaneHandler | None]) -> LaneRefusal:
    """``refuse`` for the upgrades ``own`` routes (the relay's and the agent's own refusal); an
    HTTP 503 with the JSON error body, as for plain HTTP, for every other upgrade."""

    async def refusal(ws: LaneSocket, reason: str) -> None:
        head = ws.request
        if head is not None and own(head) is not None:
            await refuse(ws, reason)
            return
        body = json_body("too_many_connections", reason)
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
        await ws.reject(503, headers, body)

    return refusal
