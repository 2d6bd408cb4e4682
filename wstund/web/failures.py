"""Failures a route does not catch itself become one JSON answer and one log line.

* JSON nested too deeply: ``json.loads`` raises RecursionError (not ValueError) on a body like
  ``[[[[...]]]]`` a thousand levels deep, so ``request.get_json(silent=True)`` let it escape as
  a 500 with a traceback; as a ValueError it becomes the route's own 400.
* A write of state the disk refuses (``tunnel add`` on a full disk: SQLite's "database or disk
  is full"): 507 ``insufficient_storage`` or 500 ``storage_error``, from ``storage.failure``.
* A marketplace refusal raised outside the marketplace routes (enable/disable persisting).
* A change to a registry shared through the cluster while Redis cannot be reached (tunnel and
  MoosicBox clients): 503 ``cluster_unavailable``, whichever route made it.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from quart import Response
from quart.json.provider import DefaultJSONProvider
from quart_trio import QuartTrio

from .. import storage
from ..cluster.clients import ClusterUnavailable
from ..marketplace.manifest import MarketplaceError
from .errors import json_error

log = logging.getLogger("wstund.http")


class DepthSafeJSONProvider(DefaultJSONProvider):
    """``loads`` raises ValueError for input nested beyond the parser's limit."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text; too deep a nesting is a ValueError like any other bad JSON."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


async def _storage_failed(exc: Exception) -> Response:
    assert isinstance(exc, OSError | sqlite3.Error)
    error = storage.failure(exc)
    log.error("%s", error.message)
    return json_error(error.status, error.code, error.message)


async def _cluster_unavailable(exc: Exception) -> Response:
    assert isinstance(exc, ClusterUnavailable)
    return json_error(
        503,
        "cluster_unavailable",
        "the cluster is unavailable (Redis cannot be reached): shared registrations cannot change",
    )


async def _refused(exc: Exception) -> Response:
    assert isinstance(exc, MarketplaceError)
    return json_error(exc.status, exc.code, exc.message)


def install(app: QuartTrio) -> None:
    """Give ``app`` the depth-safe JSON parser and the JSON answers above."""
    app.json = DepthSafeJSONProvider(app)
    app.register_error_handler(sqlite3.Error, _storage_failed)
    app.register_error_handler(OSError, _storage_failed)
    app.register_error_handler(MarketplaceError, _refused)
    app.register_error_handler(ClusterUnavailable, _cluster_unavailable)
