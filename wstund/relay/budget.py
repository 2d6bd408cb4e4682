"""Byte and rate budgets of the relay, sans-I/O apart from waiting for room.

* ``ByteBudget`` bounds the bytes a queue holds (a room's inbox): a sender past the bound
  waits for the reader to free room (backpressure on its socket), up to a timeout.
* ``RateBudget`` is a token bucket of messages and bytes per second for one member; a frame
  over it is refused (``rate_limited``), and ``strikes`` counts refusals so repeated abuse can
  close the socket (4029).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..config import RelayConfig
    from .peer import Peer


class BudgetClosed(Exception):
    """The queue this budget guards is gone (its room was destroyed)."""


class ByteBudget:
    """Bytes held by one queue, at most ``limit`` (a single frame larger than it still fits
    into an empty queue, so the largest allowed message is never refused outright)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.closed = False
        self._freed = trio.Event()

    async def take(self, size: int) -> None:
        """Reserve ``size`` bytes, waiting for room (the caller bounds the wait).

        Raises BudgetClosed when the queue is closed before or while waiting.
        """
        while not self.try_take(size):
            if self.closed:
                raise BudgetClosed
            await self._freed.wait()

    def try_take(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit now (no waiting); False if not, or closed."""
        if self.closed or not self._fits(size):
            return False
        self.used += size
        return True

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def give_back(self, size: int) -> None:
        """Free ``size`` bytes taken earlier and wake the senders waiting for room."""
        self.used = max(0, self.used - size)
        self._wake()

    def close(self) -> None:
        """The queue is gone: waiting senders get BudgetClosed."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._freed.set()
        self._freed = trio.Event()


class RateBudget:
    """A token bucket of messages and bytes per second, ``burst`` seconds deep."""

    def __init__(self, messages_per_second: float, bytes_per_second: float, burst: float) -> None:
        self.messages_per_second = messages_per_second
        self.bytes_per_second = bytes_per_second
        self.burst = burst
        self._messages = messages_per_second * burst
        self._bytes = bytes_per_second * burst
        self._at = trio.current_time()
        self.strikes = 0

    def configure(self, messages_per_second: float, bytes_per_second: float, burst: float) -> None:
        """Apply limits changed by a reload, keeping what the bucket holds."""
        self.messages_per_second = messages_per_second
        self.bytes_per_second = bytes_per_second
        self.burst = burst

    def allow(self, size: int, now: float) -> bool:
        """Spend one message and ``size`` bytes if the bucket holds them; else count a strike.

        A frame larger than the whole byte bucket passes when the bucket is full, so that the
        largest allowed message is slowed to the byte rate, never refused for ever.
        """
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._messages = min(
            self.messages_per_second * self.burst,
            self._messages + elapsed * self.messages_per_second,
        )
        byte_cap = self.bytes_per_second * self.burst
        self._bytes = min(byte_cap, self._bytes + elapsed * self.bytes_per_second)
        bytes_ok = self._bytes >= size or self._bytes >= byte_cap
        if self._messages >= 1 and bytes_ok:
            self._messages -= 1
            self._bytes -= size
            return True
        self.strikes += 1
        return False


def charge(peer: Peer, size: int, limits: RelayConfig) -> int:
    """Spend one message and ``size`` bytes of a room member's rate (``relay.member_*``), kept
    on its own socket (so on its own node, whichever node holds the room).

    Returns 0 when the frame is within the rate, else how many frames were refused so far.
    """
    per_second, per_byte = limits.member_messages_per_second, limits.member_bytes_per_second
    if peer.user_id is None or not (per_second or per_byte):
        return 0
    # 0 turns one of the two limits off: an unreachable rate stands in for it.
    rates = (per_second or float("inf"), per_byte or float("inf"), limits.member_rate_burst)
    if peer.rate is None:
        peer.rate = RateBudget(*rates)
    else:
        peer.rate.configure(*rates)
    return 0 if peer.rate.allow(size, trio.current_time()) else peer.rate.strikes
