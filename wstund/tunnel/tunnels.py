"""The tunnel's live state on the Hub: the client registry and the connected agents."""

from __future__ import annotations

import logging
import platform
import time
from typing import TYPE_CHECKING, Any

import trio

from ..config import TunnelConfig
from ..relay.ratelimit import SlidingWindow
from .frames import HEADER_SIZE
from .registry import ClientRecord, Registry
from .session import SessionLimits, TunnelSession

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("wstund.tunnel")


class Tunnels:
    """Registered clients (SQLite) and the session of each connected agent."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = Registry(hub.state_dir)
        self.sessions: dict[str, TunnelSession] = {}
        self.requests_by_address: dict[str, int] = {}  # tunnelled requests in flight
        # Failed agent logins per client address (tunnel.auth_failures_per_minute).
        self.failed_logins = SlidingWindow(60.0)
        self.node = platform.node()
        self._all_closed = trio.Event()
        self._all_closed.set()

    @property
    def config(self) -> TunnelConfig:
        return self.hub.config.tunnel

    def limits(self) -> SessionLimits:
        """Flow-control parameters for a new session, from the current config."""
        config = self.config
        relay = self.hub.config.relay
        return SessionLimits(
            window=config.window_size,
            max_frame=config.max_frame_size,
            max_message=relay.max_message_size - HEADER_SIZE,
            max_streams=config.max_streams_per_client,
            ping_interval=config.ping_interval,
            idle_timeout=config.idle_timeout,
        )

    def describe(self, record: ClientRecord) -> dict[str, Any]:
        """A client as the REST API shows it."""
        return {
            "id": record.id,
            "connected": record.id in self.sessions,
            "node": record.node,
            "last_seen": record.last_seen,
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "requests": record.requests,
            "created_at": record.created_at,
        }

    # -- sessions ------------------------------------------------------------------------------

    def attach(self, session: TunnelSession) -> None:
        """Make ``session`` the one serving its client id."""
        self.sessions[session.client_id] = session
        if self._all_closed.is_set():
            self._all_closed = trio.Event()
        record = session.record
        record.last_seen, record.node, record.dirty = time.time(), self.node, True

    def detach(self, session: TunnelSession) -> None:
        """Forget ``session`` (if it is still the one serving its client id)."""
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            record = session.record
            record.last_seen, record.node, record.dirty = time.time(), None, True
        if not self.sessions:
            self._all_closed.set()

    def disconnect(self, client_id: str, code: int, reason: str) -> bool:
        """Close the agent of ``client_id``; False if none is connected."""
        session = self.sessions.get(client_id)
        if session is None:
            return False
        session.close(code, reason)
        return True

    def close_all(self, code: int, reason: str) -> None:
        """Close every agent (graceful stop)."""
        for session in list(self.sessions.values()):
            session.close(code, reason)

    async def wait_closed(self) -> None:
        """Return once no agent is connected."""
        await self._all_closed.wait()

    async def run(self) -> None:
        """Flush statistics every ``stats_flush_interval`` seconds; flush and close at the end."""
        try:
            while True:
                await trio.sleep(self.config.stats_flush_interval or 1.0)
                self._flush()
        finally:
            self._flush()
            self.registry.close()

    def _flush(self) -> None:
        try:
            self.registry.flush()
        except Exception as exc:  # a full disk: the records stay dirty for the next flush
            log.error("could not write tunnel statistics: %s", exc)
