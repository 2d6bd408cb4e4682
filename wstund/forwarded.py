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
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
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
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Trusted:
    """The trusted proxies' networks, with recent verdicts remembered (a proxy is one peer
    asking again and again, a client one address for many requests; the memory is bounded)."""

    MEMORY = 4096

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._seen: dict[str, tuple[str | None, bool]] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def verdict(self, text: str) -> tuple[str | None, bool]:
        """(the address ``text`` names, or None if it names none; whether it is trusted)."""
        known = self._seen.get(text)
        if known is None:
            address = _ip(text)
            trusted = address is not None and any(address in n for n in self.networks)
            known = (None if address is None else str(address), trusted)
            if len(self._seen) >= self.MEMORY:
                self._seen.clear()
            self._seen[text] = known
        return known


def _last(values: list[bytes] | None) -> str:
    """The last comma-separated value of a header's lines, or ""."""
    return values[-1].decode("latin-1").rpartition(",")[2].strip() if values else ""


def _resolve(
    peer: str | None, found: dict[bytes, list[bytes]], trusted: Trusted, proto: str
) -> Client:
    """``client_address`` once the headers it reads are collected in ``found``."""
    host = found[b"host"][0].decode("latin-1") if b"host" in found else None
    if peer is None or not trusted or not trusted.verdict(peer)[1]:
        return Client(peer, proto, host)
    address = peer
    chain = b",".join(found.get(b"x-forwarded-for", [])).decode("latin-1")
    for entry in reversed(chain.split(",") if chain else []):
        hop, hop_trusted = trusted.verdict(entry.strip())
        if hop is None:
            break  # garbage from a proxy we trust: the last hop we can vouch for is the client
        address = hop
        if not hop_trusted:
            break
    claimed_proto = _last(found.get(b"x-forwarded-proto")).lower()
    if claimed_proto in ("http", "https"):
        proto = claimed_proto
    claimed_host = _last(found.get(b"x-forwarded-host"))
    if _HOST.match(claimed_host):
        host = claimed_host
    return Client(address, proto, host)


_READ = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


def client_address(
    peer: str | None,
    headers: Iterable[tuple[bytes, bytes]],
    trusted: Trusted,
    *,
    proto: str = "http",
) -> Client:
    """The effective client of a request from ``peer`` (``proto``: the scheme it came in on);
    header names are lowercase, as ASGI and h11 give them."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in _READ:
            found.setdefault(bytes(name), []).append(bytes(value))
    return _resolve(peer, found, trusted, proto)


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
        self._networks = Trusted(())

    def networks(self) -> Trusted:
        """The trusted networks, parsed again only when the configured list changes."""
        source = self.trusted()
        if source is not self._source:
            self._networks = Trusted(parse_networks(source)[0])
            self._source = source
        return self._networks

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = effective_scope(scope, self.networks())
        await self.app(scope, receive, send)


def effective_scope(scope: Scope, trusted: Trusted) -> Scope:
    """A copy of an ASGI scope with the effective client, scheme and Host, and no forwarding
    headers; the scope itself when it carries no forwarding header (nothing to change)."""
    headers = scope["headers"]
    found: dict[bytes, list[bytes]] = {}
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name in FORWARDING_HEADERS:
            found.setdefault(bytes(name), []).append(bytes(value))
        else:
            kept.append((name, value))
            if name == b"host":
                found.setdefault(b"host", []).append(bytes(value))
    if len(kept) == len(headers):
        return scope
    client = scope.get("client")
    scheme = str(scope.get("scheme", "http"))
    websocket = scope["type"] == "websocket"
    own_proto = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    who = _resolve(client[0] if client else None, found, trusted, own_proto)
    if (
        who.host is not None
        and b"host" in found
        and who.host != found[b"host"][0].decode("latin-1")
    ):
        kept = [(n, v) for n, v in kept if n != b"host"]
        kept.insert(0, (b"host", who.host.encode("latin-1")))
    scope = dict(scope)
    scope["headers"] = kept
    if who.address is not None and (client is None or who.address != client[0]):
        scope["client"] = (who.address, 0)
    scope["scheme"] = {"http": "ws", "https": "wss"}[who.proto] if websocket else who.proto
    return scope
