"""Downloads from marketplaces with httpx: timeouts, limited redirects, size caps.

Against server-side request forgery: a redirect may not leave the marketplace's origin
(scheme, host and port), and a host that resolves to a loopback, link-local, private or other
non-global address is refused, unless it is one of the operator's ``marketplace.urls`` or
``marketplace.allow_private_addresses`` is set. The address is checked when each request is
made; httpx resolves the name again to connect, so a name whose DNS answer changes within
that instant is a limit of this check (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import trio

from ..config import MarketplaceConfig
from .manifest import MarketplaceError


def normalise_url(url: str) -> str:
    """A marketplace base URL without trailing slash; only http(s) URLs are accepted."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise MarketplaceError(400, "invalid_url", f"{url!r} is not an http(s) URL")
    return str(parsed).rstrip("/")


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def is_public_address(address: str) -> bool:
    """Whether an IP address is a global unicast one (not loopback, link-local, private...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def address_guard(config: MarketplaceConfig) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook refusing non-global targets that the operator did not configure."""
    configured = set()
    for url in config.urls:
        try:
            configured.add(origin(httpx.URL(url)))
        except httpx.InvalidURL:
            continue

    async def check(request: httpx.Request) -> None:
        where = origin(request.url)
        if config.allow_private_addresses or where in configured:
            return
        try:
            infos = await trio.socket.getaddrinfo(where[1], where[2], type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise MarketplaceError(
                502, "upstream_error", f"cannot resolve {where[1]!r}: {exc}"
            ) from None
        for *_, sockaddr in infos:
            if not is_public_address(str(sockaddr[0])):
                raise MarketplaceError(
                    400,
                    "address_refused",
                    f"{where[1]!r} is a non-public address ({sockaddr[0]}); list the URL in "
                    "marketplace.urls or set marketplace.allow_private_addresses",
                )

    return check


async def same_origin_redirects(response: httpx.Response) -> None:
    """An httpx response hook: a redirect to another origin is refused, never followed."""
    if not response.has_redirect_location:
        return
    target = response.request.url.join(response.headers["Location"])
    if origin(target) != origin(response.request.url):
        raise MarketplaceError(
            502,
            "redirect_refused",
            f"GET {response.request.url}: redirect to another origin ({target.host!r}) refused",
        )


@asynccontextmanager
async def open_client(config: MarketplaceConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client with the configured timeout and redirect limit, redirects kept on the
    marketplace's own origin and non-public targets refused."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout),
        follow_redirects=config.max_redirects > 0,
        max_redirects=config.max_redirects,
        event_hooks={"request": [address_guard(config)], "response": [same_origin_redirects]},
        trust_env=False,  # no proxy from the environment: the address check must be the truth
    ) as client:
        yield client


async def stream_to(
    client: httpx.AsyncClient,
    url: str,
    sink: trio.abc.AsyncResource | None,
    cap: int,
    overall: float,
) -> tuple[bytes, str]:
    """GET ``url`` into ``sink`` (or memory when None); return (body if in memory, sha256)."""
    digest = hashlib.sha256()
    kept = bytearray()
    try:
        with trio.fail_after(overall):
            async with client.stream("GET", url) as response:
                if response.status_code == 404:
                    raise MarketplaceError(502, "not_found_upstream", f"GET {url}: 404 Not Found")
                if response.status_code != 200:
                    raise MarketplaceError(
                        502, "upstream_error", f"GET {url}: HTTP {response.status_code}"
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise _too_large(url, cap)
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise _too_large(url, cap)
                    digest.update(chunk)
                    if sink is None:
                        kept += chunk
                    else:
                        await sink.write(chunk)  # type: ignore[attr-defined]
    except trio.TooSlowError:
        raise MarketplaceError(504, "upstream_timeout", f"GET {url}: took too long") from None
    except httpx.TimeoutException:
        raise MarketplaceError(504, "upstream_timeout", f"GET {url}: timed out") from None
    except httpx.TooManyRedirects:
        raise MarketplaceError(
            502, "too_many_redirects", f"GET {url}: too many redirects"
        ) from None
    except httpx.HTTPError as exc:
        raise MarketplaceError(502, "upstream_error", f"GET {url}: {exc}") from None
    return bytes(kept), digest.hexdigest()


def _too_large(url: str, cap: int) -> MarketplaceError:
    return MarketplaceError(502, "file_too_large", f"GET {url}: larger than {cap} bytes")


async def get_bytes(client: httpx.AsyncClient, url: str, config: MarketplaceConfig) -> bytes:
    """A small document (list, manifest) read into memory, capped at ``max_file_size``."""
    body, _ = await stream_to(client, url, None, config.max_file_size, download_deadline(config))
    return body


def download_deadline(config: MarketplaceConfig) -> float:
    """Whole-download deadline: httpx's timeout is per read, a trickling server needs a cap."""
    return max(config.timeout * 6, 1.0)
