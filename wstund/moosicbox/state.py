"""The MoosicBox endpoint's live state on the Hub: senders and app sockets, per client id."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import trio

from .. import closecodes
from ..config import MoosicBoxConfig
from ..tunnel.asgi import ServerWebSocket
from .sender import SenderLost
from .served import ServedSocket
from .wire import Reply, check_json, encode_body, ws_frame

if TYPE_CHECKING:
    from ..hub import Hub
    from ..tunnel.registry import MoosicBoxTokens
    from .sender import Sender

log = logging.getLogger("wstund.moosicbox")
INVALID_DATA = 1007  # close code: an app socket sent text that is not JSON
UNSUPPORTED_DATA = 1003  # close code: an app socket sent binary (only a sender sends packets)


class AppSocket(ServedSocket):
    """An app's event socket: texts go to its client's sender, replies come back through a
    bounded outbox (an app that stops reading is closed with 4008, never holding the sender)."""

    def __init__(
        self, client_id: str, ws: ServerWebSocket, profile: str | None, state: MoosicBox
    ) -> None:
        super().__init__(ws)
        self.client_id = client_id
        self.profile = profile
        self.state = state
        self.conn_id = secrets.randbits(64) or 1
        self._out_in, self._out = trio.open_memory_channel[str](state.config.app_outbox_size)

    def offer(self, text: str) -> None:
        """Queue a message for the app; close it if it fell ``app_outbox_size`` behind."""
        try:
            self._out_in.send_nowait(text)
        except trio.WouldBlock:
            self.close(closecodes.SLOW_CONSUMER, "too far behind")
        except trio.ClosedResourceError:
            pass

    def ended(self) -> None:
        self._out_in.close()

    async def _write(self) -> None:
        async for text in self._out:
            await self.ws.send(text)

    async def on_message(self, message: str | bytes) -> None:
        """JSON text goes to the sender; anything else closes the socket."""
        if isinstance(message, bytes):
            self.close(UNSUPPORTED_DATA, "app sockets send JSON text only")
        elif not check_json(message):
            self.close(INVALID_DATA, "expected a JSON message")
        else:
            await self.state.to_sender(self, message)


class MoosicBox:
    """Senders by client id (one each), app sockets by client id and connection id."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.senders: dict[str, Sender] = {}
        self.apps: dict[str, dict[int, AppSocket]] = {}
        self._ws_requests: dict[str, dict[int, int]] = {}  # client -> request id -> conn id

    @property
    def config(self) -> MoosicBoxConfig:
        return self.hub.config.moosicbox

    @property
    def tokens(self) -> MoosicBoxTokens:
        return self.hub.tunnels.registry.moosicbox

    # -- senders ---------------------------------------------------------------------------------

    def attach(self, sender: Sender) -> None:
        """Make ``sender`` serve its client id; a sender already there is closed (4009)."""
        old = self.senders.get(sender.client_id)
        self.senders[sender.client_id] = sender
        if old is not None:
            log.warning("moosicbox %s: a new sender replaces the connected one", sender.client_id)
            old.close(closecodes.ALREADY_CONNECTED, "replaced by a new sender")

    def detach(self, sender: Sender) -> None:
        """Forget ``sender`` if it still serves its client id."""
        if self.senders.get(sender.client_id) is sender:
            del self.senders[sender.client_id]

    def close_sender(self, client_id: str, code: int, reason: str) -> None:
        """Close the sender of ``client_id`` (replaced by one on another node)."""
        sender = self.senders.get(client_id)
        if sender is not None:
            log.warning("moosicbox %s: %s", client_id, reason)
            sender.close(code, reason)

    def disconnect(self, client_id: str, code: int, reason: str) -> None:
        """Close the sender and the app sockets of ``client_id`` (removed or rotated)."""
        sender = self.senders.get(client_id)
        if sender is not None:
            sender.close(code, reason)
        for app in list(self.apps.get(client_id, {}).values()):
            app.close(code, reason)

    def close_all(self, code: int, reason: str) -> None:
        """Close every sender and app socket (graceful stop)."""
        for client_id in {*self.senders, *self.apps}:
            self.disconnect(client_id, code, reason)

    # -- app sockets -----------------------------------------------------------------------------

    def add_app(self, app: AppSocket) -> bool:
        """Register an app socket; False at ``max_app_sockets_per_client``."""
        apps = self.apps.setdefault(app.client_id, {})
        if len(apps) >= self.config.max_app_sockets_per_client:
            return False
        apps[app.conn_id] = app
        return True

    def remove_app(self, app: AppSocket) -> None:
        """Forget an app socket."""
        apps = self.apps.get(app.client_id, {})
        apps.pop(app.conn_id, None)
        if not apps:
            self.apps.pop(app.client_id, None)
            self._ws_requests.pop(app.client_id, None)

    async def to_sender(self, app: AppSocket, text: str) -> None:
        """Carry an app's JSON message to its client's sender as a WS frame (dropped, and
        logged, when no sender is connected, as MoosicBox does)."""
        sender = self.senders.get(app.client_id)
        if sender is None:
            log.info("moosicbox %s: app message dropped, no sender connected", app.client_id)
            return
        request_id = secrets.randbits(64) or 1
        routes = self._ws_requests.setdefault(app.client_id, {})
        routes[request_id] = app.conn_id
        if len(routes) > self.config.reply_routes_per_client:
            del routes[next(iter(routes))]
        try:
            await sender.send(ws_frame(app.conn_id, request_id, text, app.profile))
        except SenderLost:
            log.info("moosicbox %s: app message dropped, the sender left", app.client_id)

    def deliver(self, client_id: str, reply: Reply) -> None:
        """Route a sender's reply to that client's own app sockets only (never another's)."""
        apps = self.apps.get(client_id, {})
        if reply.request_id != 0:
            conn = self._ws_requests.get(client_id, {}).get(reply.request_id)
            targets = [apps[conn]] if conn in apps else []
        elif reply.to is not None:
            targets = [apps[conn] for conn in reply.to if conn in apps]
        elif reply.exclude is not None:
            excluded = set(reply.exclude)
            targets = [app for conn, app in apps.items() if conn not in excluded]
        else:
            targets = list(apps.values())
        if not targets:
            log.debug("moosicbox %s: reply for no connected app socket", client_id)
            return
        text = encode_body(reply.body)
        for app in targets:
            app.offer(text)
