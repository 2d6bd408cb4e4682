"""The services rooms can be created for: built-ins (chat, fileshare) and installed ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

BUILTIN_SERVICES = {
    "chat": ("Chat", "Group chat; history comes from peers, the server keeps none."),
    "fileshare": ("File share", "Share files of any size; downloads stream through the relay."),
}
# Names no service may take: they are paths of the server itself.
RESERVED_NAMES = frozenset(
    {
        "debug",
        "admin",
        "_api",
        "ws",
        "websocket",
        "api",
        "system",
        "config",
        "static",
        "assets",
        "libwstun.js",
        "_t",
        "_tunnel",
        "metrics",
        "health",
        "auth",
    }
)


def static_root() -> Path:
    """The shipped ``static/`` directory (pages, libwstun.js, built-in services)."""
    return Path(str(resources.files("wstund.static")))


@dataclass
class Service:
    """A service: what its pages are and whether rooms may be created for it."""

    name: str
    display_name: str
    description: str = ""
    version: str = "builtin"
    author: str = "wstund"
    builtin: bool = False
    enabled: bool = True
    root: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def describe(self, instance_count: int) -> dict[str, Any]:
        """The JSON shape of a service in the REST API."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "description": self.description,
            "version": self.version,
            "author": self.author,
            "builtin": self.builtin,
            "enabled": self.enabled,
            "source": "builtin" if self.builtin else "marketplace",
            "instanceCount": instance_count,
        }


class ServiceRegistry:
    """Known services by name; built-ins are always present and cannot be removed."""

    def __init__(self) -> None:
        self._services: dict[str, Service] = {}
        root = static_root() / "services"
        for name, (display, description) in BUILTIN_SERVICES.items():
            self._services[name] = Service(
                name, display, description, builtin=True, root=root / name
            )

    def get(self, name: str) -> Service | None:
        """The service called ``name``, or None."""
        return self._services.get(name)

    def all(self) -> list[Service]:
        """Every service, sorted by name."""
        return sorted(self._services.values(), key=lambda s: s.name)

    def add(self, service: Service) -> None:
        """Register (or replace) an installed service."""
        if service.name in BUILTIN_SERVICES or service.name in RESERVED_NAMES:
            raise ValueError(f"service name {service.name!r} is reserved")
        self._services[service.name] = service

    def remove(self, name: str) -> Service:
        """Forget an installed service; built-ins raise ValueError."""
        service = self._services[name]
        if service.builtin:
            raise ValueError(f"built-in service {name!r} cannot be removed")
        return self._services.pop(name)
