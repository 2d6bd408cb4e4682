"""Raw ASGI in front of everything: content that others serve on this origin is sandboxed.

Untrusted paths are a relay download (``/fileshare/download/…``), a registered program
(``/{program}/…``), an installed marketplace service (``/{service}/…``, unless the operator
lists it in ``marketplace.trusted_services``) and a tunnel reached by
path (``/_t/{id}/…``). Every response on them, of any status and from whichever layer answers,
gets the headers of ``httpheaders.untrusted_response_headers``. A request for a service worker
script (the ``Service-Worker`` header browsers send) is refused on every path of this origin:
wstund's own pages register none. Requests to untrusted paths lose the admin's credentials
(``X-Admin-Token``, the login cookie) before anything passes them on. A tunnel reached by host
(``{id}.{host_suffix}``) is an origin of its own and passes untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..httpheaders import untrusted_response_headers
from ..tunnel.asgi import Message, Receive, Scope, Send, header, send_json_error
from ..tunnel.proxy import PREFIX as TUNNEL_PREFIX
from ..tunnel.proxy import route
from .auth import ADMIN_COOKIE, is_admin_host

if TYPE_CHECKING:
    from ..hub import Hub

DOWNLOAD_PREFIX = "/fileshare/download/"
ADMIN_HEADER = b"x-admin-token"
RESPONSE_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})


def is_untrusted(hub: Hub, path: str) -> bool:
    """Whether ``path`` on this origin serves content that wstund did not write."""
    if path.startswith((TUNNEL_PREFIX, DOWNLOAD_PREFIX)):
        return True
    first = path.split("/", 2)[1] if path.startswith("/") else ""
    if first in hub.http_relay.programs:
        return True
    service = hub.services.get(first)
    if service is None or service.builtin:
        return False
    return service.name not in hub.config.marketplace.trusted_services


def without_admin_credentials(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Request headers minus the admin's credentials (``X-Admin-Token``, the login cookie), so
    that what is passed on to a program or a tunnel never carries them, even when a client
    sends them where they do not belong."""
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == ADMIN_HEADER:
            continue
        if lowered == b"cookie":
            crumbs = [c.strip() for c in value.split(b";")]
            crumbs = [c for c in crumbs if c and c.split(b"=", 1)[0] != ADMIN_COOKIE.encode()]
            if not crumbs:
                continue
            value = b"; ".join(crumbs)
        kept.append((name, value))
    return kept


class UntrustedContent:
    """An ASGI app: sandbox headers on untrusted paths, service workers refused, then ``app``."""

    def __init__(self, app: Any, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        where = route(scope, self.hub.config.tunnel.host_suffix)
        if where is not None and not where.prefix:  # a tunnel host: its own origin
            await self.app(scope, receive, send)
            return
        if kind == "http" and header(scope, b"service-worker") is not None:
            await send_json_error(
                send,
                403,
                "service_worker_refused",
                "this origin serves no service worker (management shares it)",
            )
            return
        if not is_untrusted(self.hub, scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.hub.config.admin.host and is_admin_host(header(scope, b"host"), self.hub.config):
            message = "the admin host serves no content of others (admin.host)"
            await send_json_error(send, 421, "misdirected_request", message)
            return

        scope = {**scope, "headers": without_admin_credentials(list(scope["headers"]))}

        async def guarded(message: Message) -> None:
            if message["type"] in RESPONSE_STARTS:
                message = {
                    **message,
                    "headers": untrusted_response_headers(message.get("headers", [])),
                }
            await send(message)

        await self.app(scope, receive, guarded)
