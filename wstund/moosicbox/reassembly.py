"""Sans-I/O reassembly of one response's packets into its body, in packet_id order, bounded.

A MoosicBox sender's writer lets shorter frames overtake longer ones, so a response's short
last packet often arrives before the full ones in front of it. Packets are held until the
next one in order is there; everything held or not yet taken by the caller counts against
``max_bytes``.
"""

from __future__ import annotations

from collections import deque

from .wire import Packet, WireError

PACKET_COST = 13  # the packet head counts too, so empty packets are bounded as well


class Overrun(WireError):
    """The sender ran further ahead of the caller than ``max_bytes`` allows."""


class Reassembly:
    """The packets of one request: ``feed`` them as they come, ``take`` the body in order."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.status: int | None = None
        self.headers: dict[str, str] | None = None
        self.pending = 0  # bytes held (out of order) or ready (in order, not taken)
        self.received = 0  # body bytes received in total
        self._next = 1  # the packet_id that goes out next
        self._last: int | None = None  # packet_id of the last packet, once seen
        self._held: dict[int, Packet] = {}
        self._ready: deque[bytes] = deque()

    @property
    def has_head(self) -> bool:
        """Packet 1 (status and headers) has arrived."""
        return self.status is not None

    @property
    def complete(self) -> bool:
        """Every packet arrived and every byte was taken."""
        return self._last is not None and self._next > self._last and not self._ready

    def feed(self, packet: Packet) -> None:
        """Accept one packet; WireError for a duplicate or impossible id, Overrun past the
        bound."""
        pid = packet.packet_id
        if pid < self._next or pid in self._held:
            raise WireError(f"packet {pid} came twice")
        if self._last is not None and pid > self._last:
            raise WireError(f"packet {pid} comes after the last packet {self._last}")
        if packet.last:
            if self._held and max(self._held) > pid:
                raise WireError(f"packet {pid} is marked last but {max(self._held)} came")
            self._last = pid
        self.pending += len(packet.body) + PACKET_COST
        self.received += len(packet.body)
        if self.pending > self.max_bytes:
            raise Overrun(
                f"{self.pending} bytes of one response held for its caller,"
                f" over the limit of {self.max_bytes}"
            )
        if pid == 1:
            self.status, self.headers = packet.status, packet.headers
        self._held[pid] = packet
        while self._next in self._held:
            ready = self._held.pop(self._next)
            self._ready.append(ready.body)
            self._next += 1

    def take(self) -> list[bytes]:
        """The body chunks now in order (possibly none); they stop counting against the bound."""
        chunks = list(self._ready)
        self._ready.clear()
        self.pending -= sum(len(c) + PACKET_COST for c in chunks)
        return [chunk for chunk in chunks if chunk]
