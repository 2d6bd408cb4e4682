"""One served WebSocket of the MoosicBox endpoint: a reader and a writer task until either ends
or ``close`` is called, then a close with the code given (shared by senders and app sockets)."""

from __future__ import annotations

import trio

from ..tunnel.asgi import ServerWebSocket, WebSocketClosed

CLOSE_TIMEOUT = 1.0  # seconds the close handshake may take once the socket is done


class ServedSocket:
    """Subclasses say what a message means (``on_message``) and what to send (``_write``)."""

    def __init__(self, ws: ServerWebSocket) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""
        self._cancel: trio.CancelScope | None = None

    def close(self, code: int, reason: str) -> None:
        """End the socket with ``code`` (the first code given wins)."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._cancel is not None:
            self._cancel.cancel()

    async def serve(self) -> None:
        """Read and write until the peer leaves or ``close`` is called."""
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                if self.close_code is not None:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._write)
                while await self._read_one():
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.ended()
            if self.close_code is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    await self.ws.close(self.close_code, self.close_reason)

    async def _read_one(self) -> bool:
        try:
            message = await self.ws.receive()
        except WebSocketClosed:
            return False
        await self.on_message(message)
        return self.close_code is None

    async def on_message(self, message: str | bytes) -> None:
        """Handle one message from the peer."""
        raise NotImplementedError

    async def _write(self) -> None:
        raise NotImplementedError

    def ended(self) -> None:
        """The socket is done (runs before the close handshake)."""
