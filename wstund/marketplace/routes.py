"""REST routes ``/_api/marketplace/*`` and the pages of installed services."""

from __future__ import annotations

import mimetypes
from typing import Any

import httpx
import msgspec
import trio
from quart import Blueprint, Response, request

from ..hub import Hub
from ..relay.services import Service
from ..web.errors import json_error
from ..web.files import send_static
from . import fetch, store
from .manifest import ListEntry, MarketplaceError, check_name, is_newer, parse_list


class UrlRequest(msgspec.Struct):
    url: str


class ListRequest(msgspec.Struct):
    url: str | None = None


class InstallRequest(msgspec.Struct):
    name: str
    url: str | None = None


def _error(exc: MarketplaceError) -> Response:
    return json_error(exc.status, exc.code, exc.message)


async def _body(kind: type[Any]) -> Any:
    data = await request.get_data()
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise MarketplaceError(400, "invalid_request", f"request body: {exc}") from None
    except RecursionError:
        raise MarketplaceError(400, "invalid_request", "request body: nested too deeply") from None


def content_security_policy(host: str) -> str:
    """Same-origin only: scripts (``/libwstun.js``, inline), styles, images and ``/ws``."""
    return (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; "
        f"connect-src 'self' ws://{host} wss://{host}; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


async def serve(hub: Hub, service: Service, page: str) -> Response:
    """One declared endpoint of an installed service, typed and fenced by a CSP."""
    endpoints = service.manifest.get("endpoints", []) if service.manifest else []
    endpoint = next((e for e in endpoints if e.get("path") == page), None)
    if endpoint is None or service.root is None:
        return json_error(404, "not_found", f"no page /{service.name}/{page}")
    if not service.enabled:
        return json_error(403, "service_disabled", f"service {service.name!r} is disabled")
    path = service.root / "files" / endpoint["file"]
    if not await trio.Path(path).is_file():
        return json_error(404, "not_found", f"{endpoint['file']} is not installed")
    guessed, _ = mimetypes.guess_type(endpoint["file"])
    content_type = endpoint.get("contentType") or guessed or "application/octet-stream"
    response = await send_static(path, mimetype=content_type)
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    return response


def create_blueprint(hub: Hub, *, trusted: bool = False) -> Blueprint:
    """Marketplace routes; writes need the admin token (``web.app._is_management``).

    Over HTTP (not ``trusted``) a request may name only a known marketplace (configured or
    added with ``POST /_api/marketplace/url``), so the API never fetches an arbitrary URL;
    the admin socket (``trusted``) may name any.
    """
    bp = Blueprint("marketplace", __name__)
    busy = hub.installing  # shared with the admin socket's copy of these routes

    def known(url: str) -> str:
        """``url`` normalised; refused over HTTP unless it is a known marketplace."""
        normalised = fetch.normalise_url(url)
        if not trusted and normalised not in store.marketplace_urls(hub):
            raise MarketplaceError(
                400,
                "unknown_marketplace",
                f"{normalised!r} is not a known marketplace; add it first "
                "(POST /_api/marketplace/url)",
            )
        return normalised

    @bp.errorhandler(MarketplaceError)
    async def refused(exc: MarketplaceError) -> Response:
        return _error(exc)

    @bp.get("/_api/marketplace/url")
    async def get_urls() -> Response:
        return _json({"urls": store.marketplace_urls(hub)})

    @bp.post("/_api/marketplace/url")
    async def add_url() -> Response:
        body = await _body(UrlRequest)
        url = fetch.normalise_url(body.url)
        with trio.move_on_after(max(hub.config.marketplace.timeout, 1.0)) as waited:
            await fetch.address_guard(hub.config.marketplace)(httpx.Request("GET", url))
        if waited.cancelled_caught:
            raise MarketplaceError(504, "upstream_timeout", f"resolving {url}: took too long")
        return _json({"urls": await store.add_url(hub, url)})

    @bp.post("/_api/marketplace/list")
    async def list_services() -> Response:
        body = await _body(ListRequest)
        urls = [known(body.url)] if body.url else store.marketplace_urls(hub)
        found: dict[str, list[ListEntry]] = {}
        errors: list[dict[str, str]] = []

        async def one(url: str) -> None:
            try:
                async with fetch.open_client(hub.config.marketplace) as client:
                    raw = await fetch.get_bytes(client, f"{url}/list", hub.config.marketplace)
                found[url] = parse_list(raw)
            except MarketplaceError as exc:
                errors.append({"url": url, "error": exc.code, "message": exc.message})

        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(one, url)
        services: list[dict[str, Any]] = []
        seen: set[str] = set()
        for url in urls:
            for entry in found.get(url, []):
                if entry.name in seen:
                    continue
                seen.add(entry.name)
                services.append(_merged(hub, entry, url))
        return _json({"services": services, "errors": errors})

    @bp.post("/_api/marketplace/install")
    async def install() -> Response:
        body = await _body(InstallRequest)
        check_name(body.name)
        if hub.services.get(body.name) is not None:
            raise MarketplaceError(
                409, "already_installed", f"{body.name!r} is installed; use update"
            )
        return await _install(body.name, known(body.url) if body.url else None, enabled=False)

    @bp.post("/_api/marketplace/update")
    async def update() -> Response:
        body = await _body(InstallRequest)
        check_name(body.name)
        service = hub.services.get(body.name)
        if service is None:
            raise MarketplaceError(404, "service_not_found", f"{body.name!r} is not installed")
        url = known(body.url) if body.url else store.installed_source(service)
        return await _install(body.name, url, enabled=service.enabled)

    async def _install(name: str, url: str | None, *, enabled: bool) -> Response:
        if name in busy:
            raise MarketplaceError(409, "install_in_progress", f"{name!r} is being installed")
        busy.add(name)
        try:
            with hub.inflight.track():
                service = await _install_from(name, url, enabled)
        finally:
            busy.discard(name)
        count = len(hub.instances_of(name))
        return _json({"success": True, "service": service.describe(count)})

    async def _install_from(name: str, url: str | None, enabled: bool) -> Service:
        candidates = [fetch.normalise_url(url)] if url else store.marketplace_urls(hub)
        if not candidates:
            raise MarketplaceError(400, "no_marketplace", "no marketplace URL configured")
        for base in candidates[:-1]:
            try:
                return await store.install(hub, base, name, enabled=enabled)
            except MarketplaceError as exc:
                if exc.code != "not_in_marketplace":
                    raise
        return await store.install(hub, candidates[-1], name, enabled=enabled)

    return bp


def _merged(hub: Hub, entry: ListEntry, url: str) -> dict[str, Any]:
    installed = hub.services.get(entry.name)
    mine = installed is not None and not installed.builtin
    installed_version = installed.version if mine and installed is not None else None
    return {
        "name": entry.name,
        "displayName": entry.displayName or entry.name,
        "description": entry.description,
        "version": entry.version,
        "author": entry.author,
        "installed": mine,
        "installedVersion": installed_version,
        "updateAvailable": installed_version is not None
        and is_newer(entry.version, installed_version),
        "marketplace": url,
    }


def _json(body: dict[str, Any]) -> Response:
    return Response(msgspec.json.encode(body), content_type="application/json")
