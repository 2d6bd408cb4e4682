"""The owner side of HTTP through the relay, in Python: what the fileshare page does.

A member of a fileshare room answers ``file_request`` with ``http_response_start`` and the
body, as binary frames or base64 ``http_response_chunk``, honouring the credit window
(``http_window``) unless told not to. Used by the tests and by ``bench/download.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from wstund.relay import binframe

FileSource = Callable[[int, int], bytes]  # (offset, size) -> bytes


@dataclass
class Transfer:
    """One request being answered."""

    request_id: str
    credit: int
    sent: int = 0
    aborted: bool = False
    done: bool = False
    more_credit: trio.Event = field(default_factory=trio.Event)


class FileOwner:
    """Answers file requests on ``ws`` from ``files`` (file id -> (size, source))."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        files: dict[str, tuple[int, FileSource]],
        *,
        binary: bool = True,
        honour_window: bool = True,
        chunk_size: int = 64 * 1024,
        stop_after: int | None = None,
    ) -> None:
        self.ws = ws
        self.files = files
        self.binary = binary
        self.honour_window = honour_window
        self.chunk_size = chunk_size
        self.stop_after = stop_after
        self.transfers: dict[str, Transfer] = {}
        self.requests = 0
        self.aborts: list[str] = []
        self.stalled = trio.Event()  # set when stop_after bytes were sent
        self.first_request = trio.Event()

    async def run(self) -> None:
        """Read server messages and serve each request in its own task, until the socket ends."""
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    message = await self.ws.get_message()
                    if isinstance(message, bytes):
                        continue
                    self._handle(json.loads(message), nursery)
            except trio_websocket.ConnectionClosed:
                nursery.cancel_scope.cancel()

    def _handle(self, message: dict[str, Any], nursery: trio.Nursery) -> None:
        payload = message.get("payload") or {}
        kind = message.get("type")
        if kind == "file_request":
            self.requests += 1
            transfer = Transfer(payload["requestId"], int(payload.get("window") or 0))
            self.transfers[transfer.request_id] = transfer
            self.first_request.set()
            # As the reference page: the local id is the global id's last segment.
            nursery.start_soon(self._serve, transfer, payload["fileId"].split("/")[-1])
        elif kind == "http_window":
            transfer = self.transfers.get(payload["request_id"])
            if transfer is not None:
                transfer.credit += int(payload["bytes"])
                transfer.more_credit.set()
                transfer.more_credit = trio.Event()
        elif kind == "http_abort":
            self.aborts.append(payload["request_id"])
            transfer = self.transfers.get(payload["request_id"])
            if transfer is not None:
                transfer.aborted = True
                transfer.more_credit.set()

    async def _send_json(self, type_: str, payload: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps({"type": type_, "payload": payload}))

    async def _serve(self, transfer: Transfer, file_id: str) -> None:
        rid = transfer.request_id
        if file_id not in self.files:
            await self._send_json(
                "http_response_chunk", {"request_id": rid, "error": "no such file", "done": True}
            )
            return
        size, source = self.files[file_id]
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{file_id}"',
            "Content-Length": str(size),
        }
        await self._send_json(
            "http_response_start", {"request_id": rid, "status": 200, "headers": headers}
        )
        offset = 0
        while offset < size and not transfer.aborted:
            if self.stop_after is not None and transfer.sent >= self.stop_after:
                self.stalled.set()
                await trio.sleep_forever()
            step = min(self.chunk_size, size - offset)
            while self.honour_window and transfer.credit < step and not transfer.aborted:
                await transfer.more_credit.wait()
            if transfer.aborted:
                return
            data = source(offset, step)
            if self.binary:
                await self.ws.send_message(binframe.encode(binframe.CHUNK, rid, data))
            else:
                encoded = base64.b64encode(data).decode()
                await self._send_json(
                    "http_response_chunk", {"request_id": rid, "chunk_base64": encoded}
                )
            offset += step
            transfer.sent += step
            transfer.credit -= step
        if transfer.aborted:
            return
        if self.binary:
            await self.ws.send_message(binframe.encode(binframe.END, rid))
        else:
            await self._send_json("http_response_chunk", {"request_id": rid, "done": True})
        transfer.done = True


def pattern_source(seed: int = 7) -> FileSource:
    """Deterministic pseudo-random bytes by offset, cheap to produce at any offset."""
    block = bytes((i * 131 + seed * 17 + (i >> 8)) & 0xFF for i in range(1 << 16))

    def source(offset: int, size: int) -> bytes:
        start = offset % len(block)
        out = bytearray()
        while len(out) < size:
            piece = block[start : start + size - len(out)]
            out += piece
            start = 0
        return bytes(out)

    return source
