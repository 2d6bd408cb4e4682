"""One HTTP exchange engine for every front end that parks a request under an id and streams
the answer back from a socket: relay downloads and registered programs, the native tunnel, the
MoosicBox endpoint.

``core`` is sans-I/O (``ExchangeCore``: events in, ``Grant``/``Abort`` actions out, byte
bounds, reordering); ``engine`` drives it with trio (``Exchange``, ``ExchangeTable``).

How a front end uses it::

    class SenderLink:                                  # the way back to the owner's socket
        def grant(self, exchange, credit): ...         # queue a credit frame (or do nothing)
        def abort(self, exchange, reason): ...         # queue an ABORT frame; never block

    table = ExchangeTable[int](new_id)                 # one per front end (or per owner)
    limits = Limits(window=256 * 1024, overdraft=64 * 1024)   # bytes held per request

    # caller's task (the HTTP handler):
    exchange = table.open(owner, link, limits, ordered=True)  # ordered: packets carry seq
    try:
        send_request_to_owner(exchange.id, ...)
        head = await exchange.wait_head(request_timeout)      # ExchangeFailed: TIMEOUT → 504,
                                                              # anything else → 502
        # streamed: start the response, then
        async for chunk in exchange.body(idle_timeout):       # Truncated: cut the response
            await send_chunk(chunk)                           # (credit is granted as you go)
        # or buffered: body = await exchange.collect(cap, idle_timeout)  # TooLarge → 413/502
    finally:
        exchange.close()          # caller done or gone: ABORT sent at once if unfinished

    # owner's socket reader (never blocks):
    exchange = table.find(owner, request_id)          # None: unknown or finished, drop it
    exchange.on_head(status, [(name, value), ...])
    exchange.on_data(body_bytes, seq=packet_id)        # seq only when ordered; ordered
                                                       # packets (and on_end) may come
                                                       # before the head and wait for it
    exchange.on_end(last_seq=packet_id)                # the last packet's id when ordered
    exchange.on_error("message")                       # the owner gave up
    table.owner_lost(owner)                            # the socket closed: fail its requests

An owner past ``window + overdraft`` bytes held (queued, in the reorder buffer, or not yet
credited back) is cut: the exchange fails (OVERRUN) and ``link.abort`` is called. With
``overdraft=None`` the owner is never cut; its reader awaits ``exchange.feed(chunk, timeout)``
instead and is slowed while the caller is behind. ``table.held`` counts the bytes held.
"""

from .core import CALLER_GONE, Abort, Action, ExchangeCore, FailKind, Failure, Grant, Head, Limits
from .engine import Exchange, ExchangeFailed, ExchangeTable, Link, TooLarge, Truncated

__all__ = [
    "CALLER_GONE",
    "Abort",
    "Action",
    "Exchange",
    "ExchangeCore",
    "ExchangeFailed",
    "ExchangeTable",
    "FailKind",
    "Failure",
    "Grant",
    "Head",
    "Limits",
    "Link",
    "TooLarge",
    "Truncated",
]
