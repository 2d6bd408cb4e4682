"""Installed services on disk: ``services/{name}`` links to a version directory, swapped atomically.

Layout: ``services/.v-{name}-{token}/`` holds ``manifest.json``, ``state.json`` and ``files/``;
``services/{name}`` is a symlink to it, replaced with one ``rename`` so readers see the old
version or the new one, never a half-written one. Leftovers of interrupted installs are removed
at start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import msgspec
import trio

from .. import storage
from ..hub import Hub
from ..relay.services import Service
from . import fetch
from .manifest import Manifest, MarketplaceError, check_name, parse_manifest

log = logging.getLogger("wstund.marketplace")
URLS_FILE = "marketplace-urls.json"


def services_dir(hub: Hub) -> Path:
    """Where installed services live."""
    return hub.state_dir / "services"


def _service(root: Path, manifest: Manifest, enabled: bool) -> Service:
    return Service(
        manifest.name,
        manifest.displayName or manifest.name,
        manifest.description,
        version=manifest.version,
        author=manifest.author,
        enabled=enabled,
        root=root,
        manifest=msgspec.to_builtins(manifest),
    )


def _read_installed(root: Path, name: str) -> tuple[Manifest, dict[str, Any]]:
    manifest = parse_manifest((root / "manifest.json").read_bytes(), name, 10_000)
    state = json.loads((root / "state.json").read_text())
    for endpoint in manifest.endpoints:
        if not (root / "files" / endpoint.file).is_file():
            raise MarketplaceError(500, "broken_install", f"{endpoint.file} is missing")
    return manifest, state


def load_installed(hub: Hub) -> None:
    """Register every installed service at daemon start; drop leftovers of interrupted installs."""
    base = services_dir(hub)
    if not base.is_dir():
        return
    live: set[Path] = set()
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            check_name(entry.name)
            root = entry.resolve()
            manifest, state = _read_installed(root, entry.name)
        except (OSError, ValueError, MarketplaceError) as exc:
            log.error("skipping installed service %s: %s", entry.name, exc)
            continue
        service = _service(root, manifest, bool(state.get("enabled")))
        service.manifest = json.loads((root / "manifest.json").read_text())
        hub.services.add(service)
        live.add(root)
    for entry in base.iterdir():
        if entry.name.startswith(".") and entry.resolve() not in live:
            _remove_path(entry)


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def installed_source(service: Service) -> str | None:
    """The marketplace URL a service was installed from."""
    source = service.manifest.get("_marketplace") if service.manifest else None
    return source if isinstance(source, str) else None


async def install(hub: Hub, base_url: str, name: str, *, enabled: bool) -> Service:
    """Download, verify and atomically put ``name`` in place; register it; return it.

    The whole install has one deadline (``marketplace.install_timeout``), so a trickling
    server cannot hold it file after file; a graceful stop cancels it with a 503 answer.
    """
    limit = hub.config.marketplace.install_timeout
    with hub.until_stopped() as stopped:
        try:
            with trio.fail_after(limit or math.inf):
                return await _install(hub, base_url, name, enabled=enabled)
        except trio.TooSlowError:
            raise MarketplaceError(
                504, "install_timeout", f"installing {name!r} took over {limit:g} s"
            ) from None
    assert stopped.cancelled_caught
    raise MarketplaceError(503, "shutting_down", f"wstund is stopping: {name!r} not installed")


def _check_file_tree(manifest: Manifest) -> None:
    """Refuse a manifest whose files cannot all exist: ``a`` and ``a/b`` both declared."""
    files = {e.file for e in manifest.endpoints}
    for file in files:
        parts = file.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise MarketplaceError(
                    400,
                    "invalid_manifest",
                    f"{parent!r} is declared as a file and as the directory of {file!r}",
                )


async def _install(hub: Hub, base_url: str, name: str, *, enabled: bool) -> Service:
    config = hub.config.marketplace
    base = services_dir(hub)
    await trio.Path(base).mkdir(parents=True, exist_ok=True)
    staging = base / f".v-{name}-{secrets.token_hex(6)}"
    done = False
    try:
        async with fetch.open_client(config) as client:
            try:
                raw = await fetch.get_bytes(client, f"{base_url}/service/{name}.json", config)
            except MarketplaceError as exc:
                if exc.code == "not_found_upstream":
                    raise MarketplaceError(
                        404, "not_in_marketplace", f"{base_url} offers no service {name!r}"
                    ) from None
                raise
            manifest = parse_manifest(raw, name, config.max_files)
            _check_file_tree(manifest)
            await trio.Path(staging / "files").mkdir(parents=True)
            total = 0
            for file in dict.fromkeys(e.file for e in manifest.endpoints):
                pins = {e.sha256.lower() for e in manifest.endpoints if e.file == file and e.sha256}
                target = staging / "files" / file
                await trio.Path(target.parent).mkdir(parents=True, exist_ok=True)
                cap = min(config.max_file_size, config.max_service_size - total)
                async with await trio.open_file(target, "wb") as sink:
                    try:
                        _, digest = await fetch.stream_to(
                            client,
                            f"{base_url}/service/{name}/{file}",
                            sink,
                            cap,
                            fetch.download_deadline(config),
                        )
                    except MarketplaceError as exc:
                        if exc.code == "file_too_large" and cap < config.max_file_size:
                            raise MarketplaceError(
                                502,
                                "service_too_large",
                                f"{name}: files exceed {config.max_service_size} bytes in all",
                            ) from None
                        raise
                total += (await trio.Path(target).stat()).st_size
                if pins and pins != {digest}:
                    raise MarketplaceError(
                        502, "sha256_mismatch", f"{file}: sha256 is {digest}, manifest pins {pins}"
                    )
        document = msgspec.to_builtins(manifest)
        document["_marketplace"] = base_url
        await trio.to_thread.run_sync(
            storage.write_atomic, staging / "manifest.json", json.dumps(document, indent=2)
        )
        await trio.to_thread.run_sync(
            storage.write_atomic, staging / "state.json", json.dumps({"enabled": enabled})
        )
        old = await trio.to_thread.run_sync(_swap_in, base, name, staging)
        service = _service(staging, manifest, enabled)
        service.manifest = document
        hub.services.add(service)
        done = True
        if old is not None:
            await trio.to_thread.run_sync(_remove_path, old)
        return service
    except OSError as exc:
        raise _refusal(storage.failure(exc, f"service {name!r}")) from None
    finally:
        if not done:
            _remove_path(staging)


def _swap_in(base: Path, name: str, staging: Path) -> Path | None:
    """Point ``base/name`` at ``staging`` with one rename; return the version it replaced."""
    link = base / name
    old = link.resolve() if link.is_symlink() else None
    if link.exists() and not link.is_symlink():
        _remove_path(link)
    temp_link = base / f".link-{name}-{secrets.token_hex(6)}"
    os.symlink(staging.name, temp_link)
    os.replace(temp_link, link)
    return old if old != staging else None


async def uninstall(hub: Hub, name: str) -> None:
    """Remove an installed service's files (the registry entry is the caller's)."""
    link = services_dir(hub) / name
    old = link.resolve() if link.is_symlink() else None
    await trio.to_thread.run_sync(_remove_path, link)
    if old is not None:
        await trio.to_thread.run_sync(_remove_path, old)


def _refusal(error: storage.StorageError) -> MarketplaceError:
    log.error("%s", error.message)
    return MarketplaceError(error.status, error.code, error.message)


def save_enabled(hub: Hub, service: Service, enabled: bool) -> None:
    """Persist an installed service's enabled flag before it changes, so that a change the
    disk refuses is refused (MarketplaceError 507/500) rather than lost at the next start."""
    if service.builtin or service.root is None:
        return
    try:
        storage.write_atomic(service.root / "state.json", json.dumps({"enabled": enabled}))
    except OSError as exc:
        raise _refusal(storage.failure(exc, f"the state of {service.name!r}")) from None


def marketplace_urls(hub: Hub) -> list[str]:
    """Configured marketplace URLs followed by the ones added through the API."""
    urls = []
    for url in hub.config.marketplace.urls:
        try:
            urls.append(fetch.normalise_url(url))
        except MarketplaceError as exc:
            log.error("marketplace.urls: %s", exc.message)
    try:
        added = json.loads((hub.state_dir / URLS_FILE).read_text())
    except (OSError, ValueError):
        added = []
    for url in added if isinstance(added, list) else []:
        if isinstance(url, str) and url not in urls:
            urls.append(url)
    return urls


async def add_url(hub: Hub, url: str) -> list[str]:
    """Remember one more marketplace URL (persisted in the state directory)."""
    url = fetch.normalise_url(url)
    urls = marketplace_urls(hub)
    if url not in urls:
        configured = {fetch.normalise_url(u) for u in hub.config.marketplace.urls}
        added = [u for u in urls if u not in configured] + [url]
        try:
            await trio.to_thread.run_sync(
                storage.write_atomic, hub.state_dir / URLS_FILE, json.dumps(added)
            )
        except OSError as exc:
            raise _refusal(storage.failure(exc, "the marketplace URLs")) from None
        urls.append(url)
    return urls
