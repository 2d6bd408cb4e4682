"""Keep one connection's failure inside that connection.

Hypercorn's trio worker runs every connection in the nursery of ``trio.serve_listeners``, so an
exception escaping a connection ends the listener and with it every other connection. Hypercorn
lets some escape: when h11 refuses a response (a relayed status 101 on a plain request put it in
its ERROR state), the 500 that Hypercorn then tries to send raises again outside any handler.
``apply()`` wraps the connection's ``run`` so that such an error is logged and closes only its
own connection; cancellation still propagates.
"""

from __future__ import annotations

import logging

from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("wstund.http")


def apply() -> None:
    """Patch ``TCPServer.run`` (idempotent)."""
    if getattr(TCPServer, "_wstund_guarded", False):
        return
    run = TCPServer.run

    async def guarded_run(self: TCPServer) -> None:
        try:
            await run(self)
        except* Exception as group:  # trio.Cancelled is a BaseException: it goes on up
            log.error(
                "connection dropped after an error in the HTTP server",
                exc_info=group.exceptions[0] if len(group.exceptions) == 1 else group,
            )

    TCPServer.run = guarded_run  # type: ignore[method-assign]
    TCPServer._wstund_guarded = True  # type: ignore[attr-defined]
