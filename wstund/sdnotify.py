"""systemd's notify protocol: one datagram per message to ``$NOTIFY_SOCKET``.

READY=1 once listening, STATUS= with live counts, WATCHDOG=1 from a task on the event loop
(so a stalled loop stops the pings and systemd restarts us), STOPPING=1 on shutdown.
Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import trio

log = logging.getLogger("wstund.sdnotify")


def _address(value: str) -> str:
    """``@name`` is the abstract namespace (a leading NUL byte)."""
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Sends notify messages to systemd, if it asked for them."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET") or None
        self.address = _address(address) if address else None
        self._sock: trio.socket.SocketType | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def notify(self, *lines: str) -> None:
        """Send ``KEY=VALUE`` lines as one datagram; a failure is logged, never raised."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            await self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)

    def close(self) -> None:
        """Release the datagram socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half ``$WATCHDOG_USEC``), or None when off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog(notifier: Notifier, interval: float) -> None:
    """Ping the watchdog every ``interval`` seconds; runs on the loop, so a stall stops it."""
    while True:
        await notifier.notify("WATCHDOG=1")
        await trio.sleep(interval)


async def report_status(notifier: Notifier, status: Callable[[], str], interval: float) -> None:
    """Send ``STATUS=`` whenever the text changes, checking every ``interval`` seconds."""
    last = None
    while True:
        text = status()
        if text != last:
            await notifier.notify(f"STATUS={text}")
            last = text
        await trio.sleep(interval)
