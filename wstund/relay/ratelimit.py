"""Per-address sliding-window counters (failed joins per minute)."""

from __future__ import annotations

from collections import deque

import trio


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds; memory is pruned as it goes."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def count(self, key: str) -> int:
        """Events for ``key`` inside the window."""
        events = self._prune(key, trio.current_time())
        return len(events) if events else 0

    def add(self, key: str) -> int:
        """Record one event for ``key``; return the count inside the window."""
        now = trio.current_time()
        events = self._prune(key, now)
        if events is None:
            events = self._events[key] = deque()
        events.append(now)
        if len(self._events) > 4096:
            for other in list(self._events):
                self._prune(other, now)
        return len(events)
