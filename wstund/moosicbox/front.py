"""Raw ASGI in front of the rest of wstund for MoosicBox's routes, at the root of the listeners.

A MoosicBox server derives its HTTP base from ``WS_HOST`` by dropping the path, so its calls
land on ``/auth/...``. Served here: ``/auth/*``, ``/files/track``,
``/files/{artists,albums}/{id}/{size}``, ``/ws`` with ``clientId`` (the sender's socket with
``sender=true``, else an app's event socket) and every other path whose query names
``clientId`` (a relay client never sends one). Everything else passes to ``app``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .. import closecodes
from ..cluster.clients import ClusterUnavailable
from ..transport.asgiws import KEEPALIVE
from ..tunnel.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    ServerWebSocket,
    header,
    send_json_error,
    send_whole,
)
from ..tunnel.registry import TokenKind, valid_moosicbox_id
from ..web.auth import tokens_equal
from .proxy import Call, proxy, send_text
from .sender import Sender
from .state import AppSocket
from .wire import bearer, first, forwarded_headers, parse_query, profile_of, query_map

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("wstund.moosicbox")
UNAUTHORIZED = "Unauthorized"
UNAVAILABLE = "the cluster is unavailable (Redis cannot be reached): tokens cannot be issued"
BUFFER_PARAM = "_buffer"
FILES_RE = re.compile(r"/files/(artists|albums)/[^/]+/[^/]+")
PROXY_METHODS = frozenset({"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"})
AUTH_METHODS = frozenset({"POST", "HEAD"})
CORS_METHODS = "GET, POST, OPTIONS, DELETE, PUT, PATCH"
CORS_HEADERS = (
    "authorization, accept, content-type, moosicbox-profile, hx-boosted, hx-current-url,"
    " hx-history-restore-request, hx-prompt, hx-request, hx-target, hx-trigger-name, hx-trigger"
)
CORS_EXPOSE = (
    "hx-location, hx-push-url, hx-redirect, hx-refresh, hx-replace-url, hx-reswap, hx-retarget,"
    " hx-reselect, hx-trigger, hx-trigger-after-settle, hx-trigger-after-swap"
)


def missing_field(name: str) -> str:
    """The 400 text MoosicBox's server gives for a missing query parameter."""
    return f"Query deserialize error: missing field `{name}`"


class MoosicBoxSocket(ServerWebSocket):
    """A server WebSocket accepted with MoosicBox's heartbeat (ping 5 s, dropped after 10 s
    of silence by default) instead of the relay's."""

    async def accept_with_keepalive(self, ping_interval: float, idle_timeout: float) -> None:
        """Complete the handshake with a keepalive of its own (``asgiws.KEEPALIVE``)."""
        message: Message = {
            "type": "websocket.accept",
            "subprotocol": None,
            KEEPALIVE: (ping_interval, idle_timeout),
        }
        await self._send(message)
        self.accepted = True


def _json(send: Send, data: Any, head: bool) -> Any:
    body = json.dumps(data).encode()
    return send_whole(send, 200, [(b"content-type", b"application/json")], body, head=head)


class MoosicBoxFront:
    """An ASGI app: MoosicBox routes handled here, the rest passed to ``app``."""

    def __init__(self, app: Any, hub: Hub) -> None:
        self.app: ASGIApp = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and self.hub.config.moosicbox.enabled:
            pairs = parse_query(bytes(scope.get("query_string", b"")))
            if await self._elsewhere(scope, pairs, receive, send):
                return  # served by the node holding the sender
            if kind == "http" and await self.serve_http(scope, pairs, receive, send):
                return
            if kind == "websocket" and is_moosicbox_socket(scope["path"], pairs):
                await self.serve_socket(MoosicBoxSocket(scope, receive, send), pairs)
                return
        await self.app(scope, receive, send)

    async def _elsewhere(
        self, scope: Scope, pairs: list[tuple[str, str]], receive: Receive, send: Send
    ) -> bool:
        """In a cluster, carry a request naming a client whose sender is on another node there
        (an app's event socket too; a sender's own socket stays where it connects)."""
        cluster = self.hub.cluster
        if cluster is None:
            return False
        if scope["type"] == "http":
            ours = is_moosicbox_http(scope["method"], scope["path"], pairs)
        else:
            ours = is_moosicbox_socket(scope["path"], pairs) and first(pairs, "sender") != "true"
        client_id = first(pairs, "clientId")
        if not ours or client_id is None:
            return False
        return await cluster.route_tunnel(client_id, scope, receive, send, moosicbox=True)

    # -- HTTP ------------------------------------------------------------------------------------

    async def serve_http(
        self, scope: Scope, pairs: list[tuple[str, str]], receive: Receive, send: Send
    ) -> bool:
        """Answer a MoosicBox route; False when the request is not one."""
        path, method = scope["path"], scope["method"]
        origin = header(scope, b"origin")
        if not is_moosicbox_http(method, path, pairs):
            return False
        files = path == "/files/track" or FILES_RE.fullmatch(path) is not None
        if origin is not None:
            send = _with_cors(send, origin)
            if method == "OPTIONS" and header(scope, b"access-control-request-method"):
                await _preflight(send, origin)
                return True
        tokens = self.hub.moosicbox.tokens
        head = method == "HEAD"
        query = query_map(pairs)
        access = bearer(header(scope, b"authorization"))
        if path == "/auth/register-client" and method in AUTH_METHODS:
            client_id = query.get("clientId")
            if client_id is None:
                await send_text(send, 400, missing_field("clientId"), head=head)
            elif not self._admin(access):
                await send_text(send, 401, UNAUTHORIZED, head=head)
            elif not valid_moosicbox_id(client_id):
                await send_text(send, 400, "Invalid clientId", head=head)
            else:
                token = "" if head else await self._mint(send, "access", client_id)
                if token is not None:
                    log.info("moosicbox %s: client registered", client_id)
                    await _json(send, {"token": token}, head)
            return True
        if path == "/auth/signature-token" and method in AUTH_METHODS:
            if "clientId" not in query:
                await send_text(send, 400, missing_field("clientId"), head=head)
            elif not await self._check("access", first(pairs, "clientId"), access):
                await send_text(send, 401, UNAUTHORIZED, head=head)
            else:
                client_id = first(pairs, "clientId") or ""
                token = "" if head else await self._mint(send, "signature", client_id)
                if token is not None:
                    await _json(send, {"token": token}, head)
            return True
        if path == "/auth/validate-signature-token" and method in AUTH_METHODS:
            if await self._signed(pairs) is None:
                await send_text(send, 401, UNAUTHORIZED, head=head)
            else:
                await _json(send, {"valid": True}, head)
            return True
        if path == "/auth/magic-token" and method == "POST":
            magic = query.get("magicToken")
            if "clientId" not in query or magic is None:
                field = "clientId" if "clientId" not in query else "magicToken"
                await send_text(send, 400, missing_field(field))
            elif not await self._check("access", first(pairs, "clientId"), access):
                await send_text(send, 401, UNAUTHORIZED)
            elif await self._mint(send, "magic", first(pairs, "clientId") or "", magic):
                await _json(send, {"success": True}, False)
            return True
        if path == "/auth/magic-token" and method == "GET":
            magic = query.get("magicToken")
            if magic is None:
                await send_text(send, 400, missing_field("magicToken"))
                return True
            await self._sync(magic)
            client_id = tokens.client_of("magic", magic)
            if client_id is None:
                await send_text(send, 401, UNAUTHORIZED)
                return True
            call = self._call(scope, client_id, "auth/magic-token", {"magicToken": magic}, pairs)
            await proxy(self.hub, call, scope, receive, send)
            return True
        if files and (
            method in ("GET", "HEAD") or (method == "OPTIONS" and path == "/files/track")
        ):
            client_id = await self._signed(pairs)
            if client_id is None:
                await send_text(send, 401, UNAUTHORIZED, head=head)
                return True
            await self._proxy(scope, client_id, pairs, receive, send)
            return True
        if not _has(pairs, "clientId") or method not in PROXY_METHODS:
            return False
        client_id = first(pairs, "clientId")
        if not await self._check("access", client_id, access) or client_id is None:
            await send_text(send, 401, UNAUTHORIZED, head=head)
            return True
        await self._proxy(scope, client_id, pairs, receive, send)
        return True

    def _admin(self, token: str | None) -> bool:
        """Whether ``token`` is wstund's admin token (registering needs one to be set)."""
        return tokens_equal(token, self.hub.config.server.admin_token)

    async def _sync(self, token: str | None) -> None:
        """In a cluster, bring ``token``'s local copy up to date (issued or revoked elsewhere)."""
        if self.hub.cluster is not None:
            await self.hub.cluster.moosicbox_tokens.sync(token)

    async def _check(self, kind: TokenKind, client_id: str | None, token: str | None) -> bool:
        """Whether ``token`` is a valid token of ``kind`` for ``client_id``, cluster-wide."""
        await self._sync(token)
        return self.hub.moosicbox.tokens.check(kind, client_id, token)

    async def _mint(
        self, send: Send, kind: TokenKind, client_id: str, token: str | None = None
    ) -> str | None:
        """Issue a token (on every node in a cluster); None after answering 503 when the
        cluster cannot be reached (a token known to one node alone would fail elsewhere)."""
        keep = self.hub.config.moosicbox.max_tokens_per_client
        cluster = self.hub.cluster
        if cluster is None:
            return self.hub.moosicbox.tokens.mint(kind, client_id, token, keep=keep)
        try:
            return await cluster.moosicbox_tokens.mint(kind, client_id, token, keep=keep)
        except ClusterUnavailable:
            await send_json_error(send, 503, "cluster_unavailable", UNAVAILABLE)
            return None

    async def _signed(self, pairs: list[tuple[str, str]]) -> str | None:
        """The client a valid ``clientId`` + ``signature`` pair names (keys in any case)."""
        client_id = first(pairs, "clientId")
        if await self._check("signature", client_id, first(pairs, "signature")):
            return client_id
        return None

    async def _proxy(
        self,
        scope: Scope,
        client_id: str,
        pairs: list[tuple[str, str]],
        receive: Receive,
        send: Send,
    ) -> None:
        """Proxy to ``client_id``, the client the credentials were checked against: a second
        ``clientId`` in the query never reroutes the request."""
        if not any(key == "clientId" for key, _ in pairs):
            await send_text(send, 400, "Missing clientId query param")
            return
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        kept = [(k, v) for k, v in pairs if k != BUFFER_PARAM]
        query = {**query_map(kept), "clientId": client_id}
        call = self._call(scope, client_id, raw_path.removeprefix("/"), query, pairs)
        await proxy(self.hub, call, scope, receive, send)

    def _call(
        self,
        scope: Scope,
        client_id: str,
        path: str,
        query: dict[str, str],
        pairs: list[tuple[str, str]],
    ) -> Call:
        config = self.hub.config.moosicbox
        blocking = (BUFFER_PARAM, "1") in pairs or client_id in config.buffered_clients
        return Call(
            client_id=client_id,
            method=scope["method"],
            path=path,
            query=query,
            headers=forwarded_headers(scope["headers"]),
            profile=profile_of(pairs, header(scope, b"moosicbox-profile")),
            blocking=blocking,
        )

    # -- WebSocket -------------------------------------------------------------------------------

    async def serve_socket(self, ws: MoosicBoxSocket, pairs: list[tuple[str, str]]) -> None:
        """``/ws?clientId=&signature=[&sender=true]``: a sender, or an app's event socket."""
        if not await ws.wait_connect():
            return
        query = query_map(pairs)
        sender_flag = query.get("sender", "false")
        text = "text/plain; charset=utf-8"
        if "clientId" not in query:
            await ws.respond(400, [("content-type", text)], missing_field("clientId").encode())
            return
        if sender_flag not in ("true", "false"):
            message = "Query deserialize error: provided string was not `true` or `false`"
            await ws.respond(400, [("content-type", text)], message.encode())
            return
        client_id = await self._signed(pairs)
        if client_id is None:
            await ws.respond(401, [("content-type", text)], UNAUTHORIZED.encode())
            return
        config = self.hub.config.moosicbox
        state = self.hub.moosicbox
        if sender_flag == "true":
            cluster = self.hub.cluster
            elsewhere = None
            if cluster is not None and client_id not in state.senders:
                elsewhere = await cluster.sender_node(client_id)
            await ws.accept_with_keepalive(config.ping_interval, config.idle_timeout)
            sender = Sender(client_id, ws, state)
            state.attach(sender)
            if cluster is not None:  # announce it, so the other nodes carry its requests here
                cluster.tunnel_changed()
                if elsewhere is not None:  # one sender per client id, cluster-wide
                    cluster.drop_agent(
                        elsewhere,
                        client_id,
                        closecodes.ALREADY_CONNECTED,
                        "replaced by a new sender",
                        moosicbox=True,
                    )
            log.info("moosicbox %s: sender connected", client_id)
            try:
                await sender.serve()
            finally:
                state.detach(sender)
                if cluster is not None:
                    cluster.tunnel_changed(left=client_id, moosicbox=True)
                log.info("moosicbox %s: sender left", client_id)
            return
        profile = profile_of(pairs, header(ws.scope, b"moosicbox-profile"))
        app = AppSocket(client_id, ws, profile, state)
        if not state.add_app(app):
            await ws.deny(503, "too_many_sockets", "moosicbox.max_app_sockets_per_client reached")
            return
        try:
            await ws.accept_with_keepalive(config.ping_interval, config.idle_timeout)
            await app.serve()
        finally:
            state.remove_app(app)


def is_moosicbox_http(method: str, path: str, pairs: list[tuple[str, str]]) -> bool:
    """Whether an HTTP request may be MoosicBox's: ``/auth/…``, ``/files/…`` or any path naming
    ``clientId`` (in any case) but ``GET /health``. What such a request gets back is either
    this module's own answer or the content of someone's MoosicBox server."""
    if path == "/health" and method == "GET":
        return False
    files = path == "/files/track" or FILES_RE.fullmatch(path) is not None
    return path.startswith("/auth/") or files or _has(pairs, "clientId")


def is_moosicbox_socket(path: str, pairs: list[tuple[str, str]]) -> bool:
    """Whether a WebSocket upgrade is MoosicBox's (``/ws`` naming ``clientId``, in any case):
    a relay client never sends one, so the relay's own ``/ws`` is left alone."""
    return path == "/ws" and _has(pairs, "clientId")


class Upgrade(Protocol):
    """What a router that runs before the ASGI app knows of a request (transport.head.Head)."""

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str: ...


U = TypeVar("U", bound=Upgrade)
H = TypeVar("H")


def leave_moosicbox_sockets(hub: Hub, route: Callable[[U], H | None]) -> Callable[[U], H | None]:
    """``route`` for a server that takes WebSocket upgrades before the ASGI app (the lean
    lane): MoosicBox's ``/ws?clientId=`` upgrades are left (None) to reach this front."""

    def routed(head: U) -> H | None:
        if hub.config.moosicbox.enabled and is_moosicbox_socket(
            head.path, parse_query(head.query.encode("latin-1"))
        ):
            return None
        return route(head)

    return routed


def _has(pairs: list[tuple[str, str]], name: str) -> bool:
    return first(pairs, name) is not None


def _with_cors(send: Send, origin: str) -> Send:
    """``send`` adding CORS headers to the response (any origin, as MoosicBox's server: the
    credentials are tokens in headers and queries, never cookies)."""
    extra = [
        (b"access-control-allow-origin", origin.encode("latin-1", "replace")),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", CORS_EXPOSE.encode()),
        (b"vary", b"Origin"),
    ]

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return cors_send


async def _preflight(send: Send, origin: str) -> None:
    headers = [
        (b"access-control-allow-methods", CORS_METHODS.encode()),
        (b"access-control-allow-headers", CORS_HEADERS.encode()),
        (b"access-control-max-age", b"3600"),
    ]
    await send_whole(send, 200, headers, b"")
