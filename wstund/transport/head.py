"""The head of the first request on a connection, read with h11 (sans-I/O parsing)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import h11

# Hypercorn's own bound on an incomplete head (h11_max_incomplete_size): past it, Hypercorn
# answers the request itself.
MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Head:
    """A request line and headers (names lower-case, as h11 gives them)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    rest: bytes = b""  # bytes read after the head (a WebSocket client may not wait for 101)

    @property
    def path(self) -> str:
        """The target's path, without the query."""
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def query(self) -> str:
        """The target's query string, undecoded."""
        return self.target.partition(b"?")[2].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def args(self) -> dict[str, str]:
        """Query arguments; the first value of a repeated name wins (as in werkzeug)."""
        args: dict[str, str] = {}
        for key, value in parse_qsl(self.query, keep_blank_values=True):
            args.setdefault(key, value)
        return args

    @property
    def is_websocket_upgrade(self) -> bool:
        """A GET asking to upgrade to WebSocket."""
        upgrade = self.header(b"upgrade") or b""
        connection = self.header(b"connection") or b""
        return (
            self.method == b"GET"
            and upgrade.lower() == b"websocket"
            and b"upgrade" in [token.strip().lower() for token in connection.split(b",")]
        )


def head_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole head (or more than Hypercorn would wait for)."""
    return b"\r\n\r\n" in data or b"\n\n" in data or len(data) > MAX_HEAD


def parse_head(data: bytes) -> Head | None:
    """The request head at the start of ``data``; None when it is not one h11 accepts."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        connection.receive_data(data)
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    headers = [(bytes(name), bytes(value)) for name, value in event.headers]
    rest, _closed = connection.trailing_data
    return Head(bytes(event.method), bytes(event.target), headers, bytes(rest))
