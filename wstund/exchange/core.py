"""The sans-I/O core of one HTTP exchange: a request parked under an id, its response coming
back from an *owner* (a relay connection, a tunnel agent, a MoosicBox sender).

``ExchangeCore`` is a small state machine, in the manner of h11: the owner's socket reader
feeds it events (``on_head``, ``on_data``, ``on_end``, ``on_error``, ``on_owner_lost``), the
caller's side and the clock feed it theirs (``pop``, ``consumed``, ``on_caller_gone``,
``on_head_timeout``, ``on_idle_timeout``); each event returns the actions to carry out on the
owner's socket (``Grant`` credit, ``Abort`` the request). Nothing here waits or does I/O.

Memory is bounded in bytes. Every body byte the owner sends holds credit until the caller has
taken it and the credit went back: a chunk that would take the bytes held past
``window + overdraft`` cuts the request (``Abort``), whatever the frame kind — a head or an end
can come once, an error ends the request, so no frame kind queues without bound. Small chunks
are coalesced, so many tiny frames cost their bytes, not an object each. Out-of-order packets
(``seq``, MoosicBox) wait in a reorder buffer that counts against the same bound; in ordered
mode packets (and the end) may even come before the head, and wait there for it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

# Chunks shorter than this are joined to the previous queued one.
COALESCE = 64 * 1024
# What an out-of-order packet costs on top of its bytes (its slot in the reorder buffer).
PENDING_OVERHEAD = 64
# Longest owner-supplied error message kept.
MAX_MESSAGE = 200
# The reason given when a caller leaves without saying more.
CALLER_GONE = "the caller went away"


class Grant(NamedTuple):
    """Action: give the owner ``credit`` more bytes on this request."""

    credit: int


class Abort(NamedTuple):
    """Action: tell the owner to stop this request."""

    reason: str


Action = Grant | Abort


class FailKind(enum.Enum):
    """Why an exchange failed; a front end maps it to its status and error code."""

    TIMEOUT = "timeout"  # no head within the request timeout (504), or idle mid-body
    LOST = "lost"  # the owner's socket went away (502 / truncated)
    ERROR = "error"  # the owner reported an error or broke the rules (502 / truncated)
    OVERRUN = "overrun"  # the owner sent past its byte bound (502 / truncated)
    CALLER = "caller"  # the caller left (nobody is told but the owner)
    STALLED = "stalled"  # the caller stopped reading while a waiting owner was slowed


@dataclass(frozen=True)
class Failure:
    """How an exchange ended short."""

    kind: FailKind
    message: str


@dataclass(frozen=True)
class Head:
    """The owner's response status and headers (header checks are the front end's)."""

    status: int
    headers: list[tuple[str, str]]


@dataclass(frozen=True)
class Limits:
    """Byte bounds of one exchange.

    ``window``: the owner's credit, bytes. ``overdraft``: how far past it the owner may go
    (one frame) before it is cut; ``None`` = never cut (the owner is slowed by the I/O edge
    instead, as the relay does). ``grant_at``: grant credit back once this many bytes were
    consumed (0: half the window). ``max_chunks``: queued chunks before a waiting owner is
    slowed (the I/O edge's ``feed``).
    """

    window: int
    overdraft: int | None = 0
    grant_at: int = 0
    max_chunks: int = 1024

    @property
    def threshold(self) -> int:
        """Consumed bytes that trigger a grant."""
        return max(1, self.grant_at or self.window // 2)


@dataclass
class ExchangeCore:
    """State of one exchange's response; events in, actions out (see the module docstring)."""

    limits: Limits
    ordered: bool = False  # chunks carry ``seq`` 1, 2, 3, ... and may arrive out of order
    head: Head | None = None
    failure: Failure | None = None
    finished: bool = False  # the owner's end reached the queue: no more bytes will come
    closed: bool = False  # the caller is done with it
    received: int = 0  # body bytes the owner sent
    delivered: int = 0  # body bytes the caller took
    buffered: int = 0  # bytes queued for the caller
    outstanding: int = 0  # credit the owner has used and not had back
    _queue: deque[bytes | bytearray] = field(default_factory=deque)
    _pending: dict[int, bytes] = field(default_factory=dict)
    _pending_bytes: int = 0
    _next_seq: int = 1
    _last_seq: int | None = None
    _unacked: int = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """No more bytes will be queued (ended or failed)."""
        return self.finished or self.failure is not None

    @property
    def held(self) -> int:
        """Bytes this exchange holds in memory (queue and reorder buffer)."""
        return self.buffered + self._pending_bytes

    @property
    def drained(self) -> bool:
        """Nothing queued for the caller."""
        return not self._queue

    def has_room(self, size: int) -> bool:
        """Whether a chunk of ``size`` bytes fits the queue now (for an owner that waits)."""
        if self.done or not self._queue:
            return True
        return self.buffered + size <= self.limits.window and (
            len(self._queue) < self.limits.max_chunks
        )

    # -- owner events ----------------------------------------------------------------------

    def on_head(self, head: Head) -> list[Action]:
        """The response head; a second one breaks the exchange."""
        if self.done:
            return []
        if self.head is not None:
            return self._fail(FailKind.ERROR, "response head sent twice", abort=True)
        self.head = head
        if self.ordered:
            self._release()  # packets that overtook the head's
        return []

    def on_data(self, chunk: bytes, seq: int | None = None) -> list[Action]:
        """Body bytes (packet ``seq`` in ordered mode); cuts the owner past its byte bound."""
        if self.done:
            return []
        if self.head is None and not self.ordered:
            return self._fail(FailKind.ERROR, "body before the response head", abort=True)
        cost = max(1, len(chunk)) + (PENDING_OVERHEAD if self.ordered else 0)
        bound = self.limits.overdraft
        if bound is not None and max(self.outstanding, self.held) + cost > (
            self.limits.window + bound
        ):
            return self._fail(
                FailKind.OVERRUN,
                f"the owner sent past its {self.limits.window}-byte window",
                abort=True,
            )
        self.received += len(chunk)
        if not self.ordered:
            self.outstanding += max(1, len(chunk))
            if chunk:
                self._enqueue(chunk)
            else:
                self._unacked += 1  # an empty frame used one credit: give it back with the rest
            return []
        if seq is None or seq < self._next_seq or seq in self._pending:
            return self._fail(FailKind.ERROR, f"packet {seq} out of sequence", abort=True)
        if self._last_seq is not None and seq > self._last_seq:
            return self._fail(FailKind.ERROR, f"packet {seq} after the last one", abort=True)
        self._pending[seq] = chunk
        self._pending_bytes += len(chunk) + PENDING_OVERHEAD
        self._release()
        return []

    def on_end(self, last_seq: int | None = None) -> list[Action]:
        """The owner's body ended (after packet ``last_seq`` in ordered mode)."""
        if self.done:
            return []
        if self.head is None and not self.ordered:
            return self._fail(FailKind.ERROR, "end before the response head", abort=True)
        if not self.ordered:
            self.finished = True
            return []
        if last_seq is None or last_seq < self._next_seq - 1 or self._last_seq is not None:
            return self._fail(FailKind.ERROR, f"last packet {last_seq} out of sequence", True)
        if any(seq > last_seq for seq in self._pending):
            return self._fail(FailKind.ERROR, "a packet after the last one", abort=True)
        self._last_seq = last_seq
        self._release()
        return []

    def on_error(self, message: str) -> list[Action]:
        """The owner gave the request up (its own error: no abort needed)."""
        return self._fail(FailKind.ERROR, message[:MAX_MESSAGE] or "the owner gave up", False)

    def on_owner_lost(self) -> list[Action]:
        """The owner's socket went away."""
        return self._fail(FailKind.LOST, "the owner went away", abort=False)

    # -- caller and clock events -----------------------------------------------------------

    def pop(self) -> bytes | None:
        """The next queued chunk for the caller (None: nothing queued now)."""
        if not self._queue:
            return None
        chunk = bytes(self._queue.popleft())
        self.buffered -= len(chunk)
        return chunk

    def consumed(self, size: int) -> list[Action]:
        """The caller took ``size`` bytes: their credit goes back to the owner in batches."""
        self.delivered += size
        self._unacked += size
        if self.done or self._unacked < self.limits.threshold:
            return []
        grant, self._unacked = self._unacked, 0
        self.outstanding -= grant
        return [Grant(grant)]

    def on_caller_gone(self, reason: str = CALLER_GONE) -> list[Action]:
        """The caller left (or finished): free the queue; abort an unfinished owner."""
        actions = self._fail(FailKind.CALLER, reason, abort=True) if not self.done else []
        self.closed = True
        self.discard()
        return actions

    def on_head_timeout(self, timeout: float) -> list[Action]:
        """No head came within ``timeout`` seconds."""
        if self.head is not None:
            return []
        return self._fail(FailKind.TIMEOUT, f"no response head within {timeout:g} s", True)

    def on_idle_timeout(self, timeout: float) -> list[Action]:
        """No body bytes came for ``timeout`` seconds."""
        return self._fail(FailKind.TIMEOUT, f"no data for {timeout:g} s", abort=True)

    def on_stall(self, reason: str = "the caller stopped reading") -> list[Action]:
        """The caller stopped taking bytes while the owner waited (waiting owners only)."""
        return self._fail(FailKind.STALLED, reason, abort=True)

    def discard(self) -> int:
        """Drop everything queued; return the bytes freed."""
        freed = self.held
        self._queue.clear()
        self._pending.clear()
        self.buffered = self._pending_bytes = 0
        return freed

    # -- internals -------------------------------------------------------------------------

    def _fail(self, kind: FailKind, message: str, abort: bool) -> list[Action]:
        if self.done:
            return []
        self.failure = Failure(kind, message)
        if kind is not FailKind.CALLER:
            self._pending.clear()
            self._pending_bytes = 0
        return [Abort(message)] if abort else []

    def _enqueue(self, chunk: bytes) -> None:
        self.buffered += len(chunk)
        tail = self._queue[-1] if self._queue else None
        if isinstance(tail, bytearray) and len(tail) + len(chunk) <= COALESCE:
            tail += chunk
        elif len(chunk) < COALESCE // 2:
            self._queue.append(bytearray(chunk))
        else:
            self._queue.append(chunk)

    def _release(self) -> None:
        """Move in-order packets from the reorder buffer to the queue (once the head is there);
        end after the last."""
        if self.head is None:
            return
        while self._next_seq in self._pending:
            chunk = self._pending.pop(self._next_seq)
            self._pending_bytes -= len(chunk) + PENDING_OVERHEAD
            self._next_seq += 1
            self.outstanding += max(1, len(chunk))
            if chunk:
                self._enqueue(chunk)
        if self._last_seq is not None and self._next_seq > self._last_seq:
            self.finished = True
