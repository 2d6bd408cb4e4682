"""Hypercorn's keep-alive timer for the connections we hand it, without its per-request cost.

Hypercorn's ``TCPServer`` stops its idle timer when a request arrives and restarts it when the
response is done. Its ``TrioSingleTask`` does each under a lock and restarts with
``nursery.start``, so every request costs the connection's task three trips through the
scheduler besides the timer task itself (about a tenth of the daemon's CPU per small tunnelled
request, measured with py-spy). ``QuickSingleTask`` keeps its interface and behaviour (one
timer at a time, the previous one cancelled) with no wait: the new timer is spawned and its
cancel scope made at once, so stopping it before it has run cancels it all the same.

Hypercorn offers no hook for this: its trio ``TCPServer`` builds a ``TrioSingleTask`` itself
(``WorkerContext.single_task_class`` is used by its QUIC code only, in 0.17 and 0.18), so our
accept loop sets ``idle_task`` on each ``TCPServer`` it creates. No upstream issue covers the
cost; the nearest, pgjones/hypercorn#167, is about keep-alive reuse being slow in general.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.trio.worker_context import TrioSingleTask


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class QuickSingleTask(TrioSingleTask):
    """Hypercorn's ``TrioSingleTask`` (``restart``/``stop`` of one background action), done
    without awaiting anything."""

    def __init__(self) -> None:
        super().__init__()
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        """Cancel the running action, if any, and start ``action`` in ``task_group``."""
        if self._scope is not None:
            self._scope.cancel()
        self._scope = trio.CancelScope()
        task_group.spawn(_run_in, self._scope, action)

    async def stop(self) -> None:
        """Cancel the running action, if any."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
