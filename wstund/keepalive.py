"""Keepalive of one connection: ping on an interval, notice a peer gone silent.

Shared by the WebSockets Hypercorn serves (hypercorn_ws), the tunnel's agent sessions and the
agent. The lean lane (wstund/transport) sweeps its sockets from one task instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

Settings = Callable[[], tuple[float | None, float | None]]  # (ping_interval, idle_timeout)


async def keep_alive(
    settings: Settings, last_heard: Callable[[], float], ping: Callable[[], Awaitable[None]]
) -> None:
    """Call ``ping`` every ping interval; return once nothing was heard for the idle timeout.

    ``settings`` is read at each step (0 or None turns either off), so a reload applies live;
    ``last_heard`` gives the trio time the peer was last heard from. Never returns if the idle
    timeout stays off.
    """
    interval, _ = settings()
    next_ping = trio.current_time() + (interval or 0)
    while True:
        interval, timeout = settings()
        now = trio.current_time()
        heard = last_heard()
        if timeout and now - heard >= timeout:
            return
        if interval and now >= next_ping:
            await ping()
            next_ping = now + interval
        wake = now + 1.0  # a reload may turn either on
        if interval:
            wake = min(wake, next_ping)
        if timeout:
            wake = min(wake, heard + timeout)
        await trio.sleep_until(wake)
