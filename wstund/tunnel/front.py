"""Raw ASGI in front of Quart for the tunnel's paths (Quart buffers uploads).

Public requests for a tunnel (``/_t/{id}/...``, or any path on host ``{id}.{host_suffix}``),
HTTP or WebSocket, go to the agent of that client id.

The agent socket is ``/_tunnel/connect``: the agent names its client id in the
``X-Wstun-Client`` header (or ``?client_id=``) and its secret as ``Authorization: Bearer``.
It needs no server token: the secret is the credential. Everything else goes to Quart.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .. import closecodes
from ..cluster.forward import restore_host
from .asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    ServerWebSocket,
    header,
    json_body,
    send_json_error,
    send_whole,
)
from .proxy import PREFIX, Route, proxy_http, route
from .session import TunnelSession
from .wsproxy import proxy_websocket

if TYPE_CHECKING:
    from ..hub import Hub
    from .tunnels import Tunnels

log = logging.getLogger("wstund.tunnel")
CONNECT_PATH = "/_tunnel/connect"
# Asked by a TLS front (Caddy's on_demand_tls ``ask``) before it gets a certificate for a host.
TLS_ASK_PATH = "/_tunnel/tls-ask"


def agent_credentials(scope: Scope) -> tuple[str, str]:
    """(client id, secret) an agent presented; empty strings when missing."""
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    client_id = header(scope, b"x-wstun-client") or (query.get("client_id") or [""])[0]
    authorization = header(scope, b"authorization") or ""
    scheme, _, secret = authorization.partition(" ")
    return client_id, secret.strip() if scheme.lower() == "bearer" else ""


def raw_path_for(scope: Scope, where: Route) -> Scope | None:
    """``scope`` whose raw path names the client as routing read it (``/_t/%65vil/x`` becomes
    ``/_t/evil/x``, so the agent gets ``/x``); None when the raw path names another one (an
    encoded ``/`` in ``_t`` or in the client id)."""
    if not where.prefix:
        return scope  # host routing: the agent replays the whole raw path
    raw = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    _, first, second, *rest = [*raw.split("/", 3), ""][:4]
    if unquote(first) != PREFIX.strip("/") or unquote(second) != where.client_id:
        return None
    canonical = f"{where.prefix}/{rest[0]}" if raw.count("/") >= 3 else where.prefix
    if canonical == raw:
        return scope
    return {**scope, "raw_path": canonical.encode("latin-1")}


def login_refusal(tunnels: Tunnels, address: str) -> tuple[int, str, str] | None:
    """(status, error, message) when ``address`` failed too many agent logins, else None."""
    limit = tunnels.config.auth_failures_per_minute
    if tunnels.failed_logins.count(address) < limit:
        return None
    return (
        429,
        "rate_limited",
        f"more than {limit} failed agent logins from {address} in a minute; try again later",
    )


def certificate_client(tunnels: Tunnels, domain: str) -> str | None:
    """The registered client that ``{id}.{host_suffix}`` names, else None: a certificate
    for ``domain`` is worth getting only then (it answers what host routing answers)."""
    suffix = tunnels.config.host_suffix.lower().strip(".")
    label, dot, rest = domain.lower().partition(".")
    if not suffix or not dot or rest != suffix or tunnels.registry.get(label) is None:
        return None
    return label


class TunnelFront:
    """An ASGI app: tunnel paths handled here, the rest passed to ``app``."""

    def __init__(self, app: Any, hub: Hub) -> None:
        self.app: ASGIApp = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            cluster = self.hub.cluster
            if cluster is not None:  # a WebSocket carried from another node: the caller's Host
                restore_host(scope, self.hub.config.cluster.secret)
            where = route(scope, self.hub.config.tunnel.host_suffix)
            if where is not None and cluster is not None:
                if await cluster.route_tunnel(where.client_id, scope, receive, send):
                    return  # served by the node holding the agent
            if where is not None:
                routed = raw_path_for(scope, where)
                if routed is None:
                    await self.refuse_path(scope, receive, send)
                    return
                proxy = proxy_http if kind == "http" else proxy_websocket
                await proxy(self.hub, where, routed, receive, send)
                return
            if kind == "websocket" and scope["path"] == CONNECT_PATH:
                await self.serve_agent(ServerWebSocket(scope, receive, send))
                return
            if kind == "http" and scope["path"] == TLS_ASK_PATH:
                await self.answer_tls_ask(scope, send)
                return
        await self.app(scope, receive, send)

    async def answer_tls_ask(self, scope: Scope, send: Send) -> None:
        """200 when ``?domain=`` is a registered client's host, else 404 (no token needed)."""
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        domain = (query.get("domain") or [""])[0]
        client_id = certificate_client(self.hub.tunnels, domain)
        if client_id is None:
            message = f"{domain!r} is not {{client id}}.tunnel.host_suffix of a registered client"
            await send_json_error(send, 404, "client_not_found", message)
            return
        body = json.dumps({"domain": domain, "client": client_id}).encode()
        await send_whole(send, 200, [(b"content-type", b"application/json")], body)

    async def refuse_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        """400 for a tunnel path whose client id segment hides a ``/`` (HTTP or WebSocket)."""
        error, message = "bad_tunnel_path", "a tunnel client id cannot contain an encoded '/'"
        if scope["type"] == "http":
            await send_json_error(send, 400, error, message)
            return
        ws = ServerWebSocket(scope, receive, send)
        if await ws.wait_connect():
            await ws.deny(400, error, message)

    async def serve_agent(self, ws: ServerWebSocket) -> None:
        """Authenticate an agent, then run its TunnelSession until it leaves.

        Failed logins are counted per client address: past ``tunnel.auth_failures_per_minute``
        every login from that address, right or wrong, gets 429 until the minute has passed.
        """
        tunnels = self.hub.tunnels
        if not await ws.wait_connect():
            return
        client = ws.scope.get("client")
        address = str(client[0]) if client else "unix"
        refusal = login_refusal(tunnels, address)
        if refusal is not None:
            status, error, message = refusal
            retry = str(math.ceil(tunnels.failed_logins.window))
            headers = [("content-type", "application/json"), ("retry-after", retry)]
            await ws.respond(status, headers, json_body(error, message))
            return
        client_id, secret = agent_credentials(ws.scope)
        if client_id and self.hub.cluster is not None:  # registered, rotated, removed elsewhere
            await self.hub.cluster.clients.sync(client_id)
        if not client_id or not tunnels.registry.verify(client_id, secret):
            tunnels.failed_logins.add(address)
            await ws.deny(401, "unauthorized", "unknown client id or wrong secret")
            return
        record = tunnels.registry.get(client_id)
        assert record is not None
        existing = tunnels.sessions.get(client_id)
        cluster = self.hub.cluster
        if existing is None and cluster is not None:  # one agent per client id, cluster-wide
            elsewhere = await cluster.agent_node(client_id)
            if elsewhere is not None and not tunnels.config.replace_existing:
                await ws.accept()
                await ws.close(closecodes.ALREADY_CONNECTED, "an agent is already connected")
                return
            if elsewhere is not None:
                cluster.drop_agent(elsewhere, client_id)
        if existing is not None and not tunnels.config.replace_existing:
            await ws.accept()
            await ws.close(closecodes.ALREADY_CONNECTED, "an agent is already connected")
            return
        if existing is not None:
            existing.close(closecodes.ALREADY_CONNECTED, "replaced by a new agent")
        await ws.accept()
        session = TunnelSession(client_id, record, ws, tunnels.limits())
        tunnels.attach(session)
        if self.hub.cluster is not None:
            self.hub.cluster.tunnel_changed()
        log.info("tunnel %s: agent connected", client_id)
        try:
            await session.run()
        finally:
            tunnels.detach(session)
            if self.hub.cluster is not None:
                self.hub.cluster.tunnel_changed(left=client_id)
            log.info("tunnel %s: agent left", client_id)
