"""Reconnect delays: capped exponential backoff with jitter (pure, so it is tested without time)."""

from __future__ import annotations

import random


def reconnect_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): full range jitter in [d/2, d]."""
    ceiling = min(maximum, initial * 2 ** min(attempt, 32))
    return float(ceiling * (rng or random).uniform(0.5, 1.0))
