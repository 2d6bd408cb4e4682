"""Counting accepted sockets against the total and per-address caps (sans-I/O).

A socket past either cap is not served. A few of them (``REFUSAL_SLOTS`` in all, at most
``REFUSAL_SLOTS_PER_ADDRESS`` per address) are told why (an HTTP 503, or the relay's
``too_many_connections`` error and close 4029), for at most the head timeout each; the rest are
closed at once, which costs one ``close()``.
"""

from __future__ import annotations

import enum
from collections import Counter

REFUSAL_SLOTS = 16
REFUSAL_SLOTS_PER_ADDRESS = 2


class Verdict(enum.Enum):
    """What to do with a newly accepted socket."""

    SERVE = "serve"
    REFUSE = "refuse"  # tell the client why, then close
    DROP = "drop"  # close at once


class Admission:
    """Live counts of accepted sockets, in all and per address; limits are read per call."""

    def __init__(self) -> None:
        self.total = 0
        self.by_address: Counter[str] = Counter()
        self.refusing = 0
        self.refusing_by_address: Counter[str] = Counter()

    def admit(self, address: str, limit: int, per_address: int | None) -> tuple[Verdict, str]:
        """Count a socket from ``address``; return the verdict and, unless served, why.

        ``per_address`` None means no per-address cap (unix sockets share no address).
        """
        if self.total >= limit:
            reason = f"server is at its connection limit ({limit})"
        elif per_address is not None and self.by_address[address] >= per_address:
            reason = f"too many connections from {address} ({per_address})"
        else:
            self.total += 1
            self.by_address[address] += 1
            return Verdict.SERVE, ""
        if (
            self.refusing < REFUSAL_SLOTS
            and self.refusing_by_address[address] < REFUSAL_SLOTS_PER_ADDRESS
        ):
            self.refusing += 1
            self.refusing_by_address[address] += 1
            return Verdict.REFUSE, reason
        return Verdict.DROP, reason

    def release(self, address: str, verdict: Verdict) -> None:
        """Forget a socket counted by ``admit`` with ``verdict`` (SERVE or REFUSE)."""
        if verdict is Verdict.SERVE:
            self.total -= 1
            counts = self.by_address
        elif verdict is Verdict.REFUSE:
            self.refusing -= 1
            counts = self.refusing_by_address
        else:
            return
        counts[address] -= 1
        if counts[address] <= 0:
            del counts[address]


class RateLimitedLine:
    """At most one log line per ``period`` seconds; counts what it held back in between."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._next = float("-inf")
        self.held_back = 0

    def due(self, now: float) -> int | None:
        """None while quiet; else the number of events held back since the last line."""
        if now < self._next:
            self.held_back += 1
            return None
        self._next = now + self.period
        held, self.held_back = self.held_back, 0
        return held
