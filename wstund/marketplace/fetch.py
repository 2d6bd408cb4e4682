"""Downloads from marketplaces with httpx: timeouts, limited redirects, size caps."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
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


@asynccontextmanager
async def open_client(config: MarketplaceConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client with the configured timeout and redirect limit."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout),
        follow_redirects=config.max_redirects > 0,
        max_redirects=config.max_redirects,
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
