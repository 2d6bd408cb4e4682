"""What a config reload changes: the keys that differ, and those that need a restart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..config import Config

# Keys whose new value only takes effect after a restart; reload keeps the running value.
RESTART_ONLY = (
    "server.bind",
    "server.state_dir",
    "admin.socket",
    "metrics.bind",
    "cluster.redis_url",
    "cluster.redis_password",
    "cluster.node_id",
    "cluster.advertise_url",
)


@dataclass
class ReloadOutcome:
    """The result of one reload: refused (``errors``) or applied (``changed``)."""

    errors: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The body ``POST /_api/reload`` answers with."""
        if self.errors:
            return {
                "error": "config_refused",
                "message": "new config refused, the running one stays: " + "; ".join(self.errors),
                "errors": self.errors,
            }
        return {"success": True, "changed": self.changed, "restart_needed": self.restart_needed}


def _flatten(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in msgspec.structs.asdict(config).items():
        for key, value in msgspec.structs.asdict(values).items():
            flat[f"{section}.{key}"] = value
    return flat


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ (names only: values may be secrets)."""
    before, after = _flatten(old), _flatten(new)
    return sorted(key for key in after if before.get(key) != after[key])


def keep_restart_only(old: Config, new: Config) -> list[str]:
    """Copy the running value of every restart-only key into ``new``; return those that differed."""
    differing = []
    for dotted in RESTART_ONLY:
        section, key = dotted.split(".")
        running = getattr(getattr(old, section), key)
        if getattr(getattr(new, section), key) != running:
            differing.append(dotted)
            setattr(getattr(new, section), key, running)
    return differing
