"""The Hypercorn floor of bench/tunnel.py: Hypercorn's trio worker serving the bench's files
from a minimal ASGI app (no framework, no proxying), in one process. Whatever Hypercorn serves
costs at least this per request; wstund's tunnelled requests are served by Hypercorn too.

    python bench/peers/hypercorn_files.py PORT WWW
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

CHUNK = 256 * 1024  # bytes per body message of a download
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def files_app(www: Path) -> App:
    """An ASGI app answering GET /NAME with the file WWW/NAME (mapped, so no blocking read)."""
    files = {f"/{p.name}": p for p in www.iterdir() if p.is_file()}
    maps: dict[str, memoryview] = {}
    for name, path in files.items():
        size = path.stat().st_size
        with path.open("rb") as f:
            mapped = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else b""
        maps[name] = memoryview(mapped)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        data = maps.get(scope["path"]) if scope["type"] == "http" else None
        if data is None:
            headers = [(b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(data), CHUNK):
            body = bytes(data[start : start + CHUNK])
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    port, www = int(sys.argv[1]), Path(sys.argv[2])
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    trio.run(serve, files_app(www), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
