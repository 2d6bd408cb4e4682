"""Who a request is really from: the peer address, or what a trusted proxy says it forwarded.

Sans-I/O: ``client_address`` is a pure function of the peer, the request headers and the
``server.trusted_proxies`` networks, so the ASGI middleware below and a WebSocket lane outside
ASGI decide alike. Only a peer inside ``trusted`` has its ``X-Forwarded-For/Proto/Host``
honoured; the client is the rightmost X-Forwarded-For address that is not itself a trusted
proxy. Every other peer is its own client, and the headers it sent are dropped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Headers that claim something about an earlier hop. They are consumed here and never passed
# on as they came: what the proxy asserted is in the scope, what anyone else sent is dropped.
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)
_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$")


class Client(NamedTuple):
    """The effective client of a request: its address, the scheme it used, the Host it asked."""

    address: str | None  # None for a unix-socket peer
    proto: str  # "http" or "https"
    host: str | None


def parse_networks(entries: Iterable[str]) -> tuple[list[Network], list[str]]:
    """``server.trusted_proxies`` as networks (a bare address is a /32 or /128), and errors."""
    networks: list[Network] = []
    errors: list[str] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            errors.append(f"server.trusted_proxies: {entry!r} is not an IP address or CIDR")
    return networks, errors


def _ip(text: str) -> Address | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:5678``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every comma-separated value of header ``name``, across repeated lines, in order."""
    values: list[str] = []
    for key, value in headers:
        if bytes(key).lower() == name:
            values.extend(part.strip() for part in bytes(value).decode("latin-1").split(","))
    return values


def client_address(
    peer: str | None,
    headers: Iterable[tuple[bytes, bytes]],
    trusted: Sequence[Network],
    *,
    proto: str = "http",
) -> Client:
    """The effective client of a request from ``peer`` (``proto``: the scheme it came in on)."""
    headers = list(headers)
    host = next(iter(_values(headers, b"host")), None)
    here = _ip(peer) if peer else None
    if not trusted or not _trusted(here, trusted):
        return Client(peer, proto, host)
    address = peer
    for entry in reversed(_values(headers, b"x-forwarded-for")):
        hop = _ip(entry)
        if hop is None:
            break  # garbage from a proxy we trust: the last hop we can vouch for is the client
        address = str(hop)
        if not _trusted(hop, trusted):
            break
    claimed_proto = (_values(headers, b"x-forwarded-proto") or [""])[-1].lower()
    if claimed_proto in ("http", "https"):
        proto = claimed_proto
    claimed_host = (_values(headers, b"x-forwarded-host") or [""])[-1]
    if _HOST.match(claimed_host):
        host = claimed_host
    return Client(address, proto, host)


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class TrustedProxies:
    """ASGI middleware: rewrite a request's scope to its effective client (``client_address``).

    ``scope["client"]``, ``scope["scheme"]`` and the Host header become what a trusted proxy
    forwarded, so limits, the access log and the tunnel's own X-Forwarded-* all see the real
    client; forwarding headers are then removed from every request, trusted or not.

    Not Hypercorn's ProxyFixMiddleware: it trusts the last N hops of any peer (so anyone who
    reaches the port directly can claim any address) and cannot check the peer's address.
    """

    def __init__(self, app: ASGIApp, trusted: Callable[[], list[str]]) -> None:
        self.app = app
        self.trusted = trusted  # read per request: a reload changes it live
        self._source: list[str] | None = None
        self._networks: list[Network] = []

    def networks(self) -> list[Network]:
        """The trusted networks, parsed again only when the configured list changes."""
        source = self.trusted()
        if source is not self._source:
            self._networks, _ = parse_networks(source)
            self._source = source
        return self._networks

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = effective_scope(scope, self.networks())
        await self.app(scope, receive, send)


def effective_scope(scope: Scope, trusted: Sequence[Network]) -> Scope:
    """A copy of an ASGI scope with the effective client, scheme and Host, and no forwarding
    headers; the scope itself when there is nothing to change."""
    headers = scope["headers"]
    forwarding = any(bytes(name).lower() in FORWARDING_HEADERS for name, _ in headers)
    if not forwarding:
        return scope
    client = scope.get("client")
    websocket = scope["type"] == "websocket"
    scheme = str(scope.get("scheme", "http"))
    own_proto = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    who = client_address(client[0] if client else None, headers, trusted, proto=own_proto)
    kept = [(n, v) for n, v in headers if bytes(n).lower() not in FORWARDING_HEADERS]
    if who.host is not None and who.host != next(iter(_values(headers, b"host")), None):
        kept = [(n, v) for n, v in kept if bytes(n).lower() != b"host"]
        kept.insert(0, (b"host", who.host.encode("latin-1")))
    scope = dict(scope)
    scope["headers"] = kept
    if who.address is not None and (client is None or who.address != client[0]):
        scope["client"] = (who.address, 0)
    scope["scheme"] = {"http": "ws", "https": "wss"}[who.proto] if websocket else who.proto
    return scope
