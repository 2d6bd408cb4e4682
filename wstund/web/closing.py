"""ASGI middleware: let Hypercorn finish a response, so that a connection HTTP says to close
(``Connection: close``, HTTP/1.0, a 413 before the body was read) really closes.

Hypercorn runs the end of a response inside the app's ``send`` call: the last body message
makes it tell the app ``http.disconnect``, then recycle the connection or, when HTTP says it
must not be reused, shut the socket (``TCPServer._close``). Quart-Trio cancels the request's
task as soon as it sees ``http.disconnect`` (``TrioASGIHTTPConnection.handle_messages``), which
is the task still inside that ``send``: the socket shutdown is cancelled and the connection
stays open until the caller gives up (upstream: pgjones/hypercorn#330, "Connection:close
ignored?"; the same cancellation also hits raw ASGI apps that stop on ``http.disconnect``).
The last message of a response is therefore sent under a shield, with a deadline of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Seconds Hypercorn gets to write the end of a response and shut the socket. Its socket writes
# are shielded already (and bounded by the kernel's TCP_USER_TIMEOUT); this bounds the rest.
FINISH_TIMEOUT = 30.0


def _is_last(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


class FinishResponses:
    """Wrap ``app`` so the last message of every HTTP response cannot be cancelled half-way."""

    def __init__(self, app: ASGIApp, timeout: float = FINISH_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def finishing_send(message: Message) -> None:
            if not _is_last(message):
                await send(message)
                return
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.timeout):
                await send(message)

        await self.app(scope, receive, finishing_send)
