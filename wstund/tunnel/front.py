"""Raw ASGI in front of Quart for the tunnel's paths (STACK.md: Quart buffers uploads).

Public requests for a tunnel (``/_t/{id}/...``, or any path on host ``{id}.{host_suffix}``),
HTTP or WebSocket, go to the agent of that client id.

The agent socket is ``/_tunnel/connect``: the agent names its client id in the
``X-Wstun-Client`` header (or ``?client_id=``) and its secret as ``Authorization: Bearer``.
It needs no server token: the secret is the credential. Everything else goes to Quart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .. import closecodes
from .asgi import ASGIApp, Receive, Scope, Send, ServerWebSocket, header
from .proxy import proxy_http, route
from .session import TunnelSession
from .wsproxy import proxy_websocket

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("wstund.tunnel")
CONNECT_PATH = "/_tunnel/connect"


def agent_credentials(scope: Scope) -> tuple[str, str]:
    """(client id, secret) an agent presented; empty strings when missing."""
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    client_id = header(scope, b"x-wstun-client") or (query.get("client_id") or [""])[0]
    authorization = header(scope, b"authorization") or ""
    scheme, _, secret = authorization.partition(" ")
    return client_id, secret.strip() if scheme.lower() == "bearer" else ""


class TunnelFront:
    """An ASGI app: tunnel paths handled here, the rest passed to ``app``."""

    def __init__(self, app: Any, hub: Hub) -> None:
        self.app: ASGIApp = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            where = route(scope, self.hub.config.tunnel.host_suffix)
            cluster = self.hub.cluster
            if where is not None and cluster is not None:
                if await cluster.route_tunnel(where.client_id, scope, receive, send):
                    return  # served by the node holding the agent
            if where is not None:
                proxy = proxy_http if kind == "http" else proxy_websocket
                await proxy(self.hub, where, scope, receive, send)
                return
            if kind == "websocket" and scope["path"] == CONNECT_PATH:
                await self.serve_agent(ServerWebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)

    async def serve_agent(self, ws: ServerWebSocket) -> None:
        """Authenticate an agent, then run its TunnelSession until it leaves."""
        tunnels = self.hub.tunnels
        if not await ws.wait_connect():
            return
        client_id, secret = agent_credentials(ws.scope)
        if not client_id or not tunnels.registry.verify(client_id, secret):
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
            log.info("tunnel %s: agent left", client_id)
