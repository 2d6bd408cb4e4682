"""The ordered publisher: what this node sends other nodes leaves in order, in batches.

Operations queue without waiting (fan-out never blocks on Redis). One task publishes them on
one connection in the order queued, gathering what waits for the same node into one message
(each frame once), so frames from one sender reach each recipient in the order sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio
import coredis
import coredis.exceptions
import trio

from . import wire
from .registry import channel

# What a failed Redis call raises: coredis' own errors, timeouts, and the socket's. (coredis
# 6.9's PubSub._cleanup also writes UNSUBSCRIBE to a connection already closed when the
# subscriber is cancelled, and lets anyio's ClosedResourceError out.)
FAULTS = (
    coredis.exceptions.RedisError,
    TimeoutError,
    OSError,
    trio.BrokenResourceError,
    anyio.ClosedResourceError,
    trio.TooSlowError,  # no answer within cluster.request_timeout
)
MAX_BATCH_OPS = 4096
_CARRY_FRAMES = (wire.Deliver, wire.FromMember, wire.FromOwner)


class Publisher:
    """Queued operations for other nodes, and the task that publishes them."""

    def __init__(self, node_id: str, timeout: float) -> None:
        self.node_id = node_id
        self.timeout = timeout
        self.published = 0  # PUBLISH calls (a batch each)
        self.relayed_ops = 0  # operations those batches carried
        self.pending_bytes = 0  # frame bytes queued
        self._pending: deque[tuple[str, wire.Op, wire.Frame | None]] = deque()
        self._wake = trio.Event()
        self._idle = trio.Event()  # set while nothing waits to be published
        self._idle.set()

    def queue(self, node: str, op: wire.Op, frame: wire.Frame | None) -> None:
        """Queue ``op`` (carrying ``frame``) for ``node``, behind what was queued before."""
        self._pending.append((node, op, frame))
        self.pending_bytes += len(frame) if frame is not None else 0
        self._wake.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    def clear(self) -> None:
        """Drop what waits (the links it was for are cut)."""
        self._pending.clear()
        self.pending_bytes = 0
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once everything queued was published (or dropped)."""
        await self._idle.wait()

    def _take_batches(self) -> dict[str, wire.BatchBuilder]:
        """Up to MAX_BATCH_OPS queued operations, gathered per node in their order."""
        batches: dict[str, wire.BatchBuilder] = {}
        for _ in range(min(len(self._pending), MAX_BATCH_OPS)):
            node, op, frame = self._pending.popleft()
            if frame is not None:
                self.pending_bytes -= len(frame)
            builder = batches.get(node)
            if builder is None:
                builder = batches[node] = wire.BatchBuilder(self.node_id)
            if frame is not None and isinstance(op, _CARRY_FRAMES):
                op.frame = builder.frame(frame)
            builder.ops.append(op)
        return batches

    async def run(self, redis: coredis.Redis[bytes], on_fault: Callable[[str], None]) -> None:
        """Publish what is queued, as it comes, until cancelled; ``on_fault`` on a failure."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._pending:
                batches = self._take_batches()
                try:
                    for node, builder in batches.items():
                        with trio.fail_after(self.timeout):
                            await redis.publish(channel(node), wire.encode(builder.build()))
                        self.published += 1
                        self.relayed_ops += len(builder.ops)
                except* FAULTS as group:
                    on_fault(f"publish: {group.exceptions[0]!r}")
            self._idle.set()
