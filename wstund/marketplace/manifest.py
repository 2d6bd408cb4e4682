"""Marketplace wire shapes (list entries, manifests) and their validation, sans-I/O."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from ..relay.services import BUILTIN_SERVICES, RESERVED_NAMES

NAME_RE = re.compile(r"[a-z0-9]{1,64}")
SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
ShortText = Annotated[str, msgspec.Meta(max_length=4096)]


class MarketplaceError(Exception):
    """A refusal with an HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ListEntry(msgspec.Struct, kw_only=True):
    """One entry of a marketplace's ``{base}/list``."""

    name: ShortText
    displayName: ShortText = ""  # noqa: N815 - reference spelling
    description: ShortText = ""
    version: ShortText = ""
    author: ShortText = ""


class Endpoint(msgspec.Struct, kw_only=True):
    """One page of a service: served at ``/{name}/{path}`` from ``{base}/service/{name}/{file}``."""

    path: ShortText
    file: ShortText
    type: Literal["service", "client"] = "client"
    contentType: (
        Annotated[str, msgspec.Meta(pattern=r"^[\w.+-]+/[\w.+-]+(; ?[\w.+-]+=[\w.+-]+)*$")] | None
    ) = None  # noqa: N815,E501
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


class Manifest(msgspec.Struct, kw_only=True):
    """A service manifest, ``{base}/service/{name}.json``."""

    name: ShortText
    endpoints: list[Endpoint]
    displayName: ShortText = ""  # noqa: N815
    description: ShortText = ""
    version: ShortText = ""
    author: ShortText = ""
    icon: ShortText = ""


def check_name(name: str) -> None:
    """Refuse names that are not lowercase alphanumeric, reserved, or a built-in's."""
    if not NAME_RE.fullmatch(name):
        raise MarketplaceError(
            400, "invalid_name", f"service name {name!r} is not lowercase a-z0-9"
        )
    if name in RESERVED_NAMES:
        raise MarketplaceError(400, "reserved_name", f"service name {name!r} is reserved")
    if name in BUILTIN_SERVICES:
        raise MarketplaceError(409, "builtin_conflict", f"{name!r} is a built-in service")


def check_relative(value: str, what: str, *, nested: bool) -> None:
    """Refuse anything but a plain relative name (no ``..``, absolute path, backslash or NUL)."""
    segments = value.split("/") if nested else [value]
    if any(s in (".", "..") or not SEGMENT_RE.fullmatch(s) for s in segments):
        raise MarketplaceError(
            400, "invalid_path", f"{what} {value!r} is not a plain relative name"
        )


def parse_manifest(data: bytes, name: str, max_files: int) -> Manifest:
    """Decode and validate a manifest fetched for service ``name``."""
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise MarketplaceError(400, "invalid_manifest", f"manifest of {name!r}: {exc}") from None
    check_name(manifest.name)
    if manifest.name != name:
        raise MarketplaceError(
            400, "invalid_manifest", f"manifest is for {manifest.name!r}, not {name!r}"
        )
    if not manifest.endpoints:
        raise MarketplaceError(400, "invalid_manifest", "manifest declares no endpoints")
    if len(manifest.endpoints) > max_files:
        raise MarketplaceError(
            400, "invalid_manifest", f"manifest declares more than {max_files} endpoints"
        )
    paths: set[str] = set()
    for endpoint in manifest.endpoints:
        # The reference documents "/service" and "/main": one leading slash names the same page.
        if endpoint.path.startswith("/"):
            endpoint.path = endpoint.path[1:]
        check_relative(endpoint.path, "endpoint path", nested=False)
        check_relative(endpoint.file, "endpoint file", nested=True)
        if endpoint.path in paths:
            raise MarketplaceError(
                400, "invalid_manifest", f"endpoint path {endpoint.path!r} is declared twice"
            )
        paths.add(endpoint.path)
    return manifest


def parse_list(data: bytes) -> list[ListEntry]:
    """Decode a marketplace's ``/list``; entries with unusable names are dropped."""
    try:
        entries = msgspec.json.decode(data, type=list[ListEntry])
    except msgspec.DecodeError as exc:
        raise MarketplaceError(502, "invalid_list", f"marketplace list: {exc}") from None
    return [e for e in entries if NAME_RE.fullmatch(e.name)]


def _version_key(version: str) -> tuple[int, ...] | None:
    parts = version.strip().lstrip("v").split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def is_newer(available: str, installed: str) -> bool:
    """True when ``available`` is a later version than ``installed`` (dotted numbers, else !=)."""
    a, b = _version_key(available), _version_key(installed)
    if a is not None and b is not None:
        return a > b
    return available != installed
