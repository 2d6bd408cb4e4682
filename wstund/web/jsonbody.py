"""Quart's JSON provider, with JSON nested too deeply for the parser refused as bad JSON.

``json.loads`` raises RecursionError (not ValueError) on a body like ``[[[[...]]]]`` a
thousand levels deep, so ``request.get_json(silent=True)`` let it escape as a 500 with a
traceback; as a ValueError it becomes the route's own 400.
"""

from __future__ import annotations

from typing import Any

from quart.json.provider import DefaultJSONProvider


class DepthSafeJSONProvider(DefaultJSONProvider):
    """``loads`` raises ValueError for input nested beyond the parser's limit."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text; too deep a nesting is a ValueError like any other bad JSON."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
