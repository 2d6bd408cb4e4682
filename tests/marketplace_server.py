"""A real marketplace for tests: a directory served by Hypercorn + Quart-Trio on loopback."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio


@dataclass
class Marketplace:
    """Files under ``root`` in the reference layout, plus knobs to misbehave."""

    root: Path
    url: str = ""
    delay: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    drop: set[str] = field(default_factory=set)  # paths cut off half-way through the body
    hang: set[str] = field(default_factory=set)  # paths that never answer
    hung: trio.Event = field(default_factory=trio.Event)
    redirect: dict[str, str] = field(default_factory=dict)  # path -> Location
    trickle: set[str] = field(default_factory=set)  # paths sent one byte every 0.1 s

    def publish(
        self,
        name: str,
        version: str,
        files: dict[str, bytes],
        *,
        endpoints: list[dict[str, Any]] | None = None,
        pin: bool = False,
        **extra: Any,
    ) -> None:
        """Write ``service/{name}.json``, its files, and the ``/list`` entry."""
        if endpoints is None:
            endpoints = [
                {
                    "path": Path(f).stem,
                    "file": f,
                    "type": "service" if f.startswith("s") else "client",
                }
                for f in files
            ]
        if pin:
            for e in endpoints:
                e["sha256"] = hashlib.sha256(files[e["file"]]).hexdigest()
        manifest = {
            "name": name,
            "displayName": name.title(),
            "description": f"{name} test service",
            "version": version,
            "author": "tests",
            "endpoints": endpoints,
            **extra,
        }
        self.write(f"service/{name}.json", json.dumps(manifest).encode())
        for file, data in files.items():
            self.write(f"service/{name}/{file}", data)
        listing = [e for e in self._list() if e["name"] != name]
        listing.append(
            {k: manifest[k] for k in ("name", "displayName", "description", "version", "author")}
        )
        self.write("list", json.dumps(listing).encode())

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def _list(self) -> list[dict[str, Any]]:
        path = self.root / "list"
        return json.loads(path.read_text()) if path.exists() else []


def create_app(market: Marketplace) -> QuartTrio:
    """Serve ``market.root`` as a static marketplace."""
    app = QuartTrio("marketplace")

    @app.get("/<path:path>")
    async def files(path: str) -> Response:
        if path in market.hang:
            market.hung.set()
            await trio.sleep_forever()
        await trio.sleep(market.delay.get(path, 0))
        if path in market.redirect:
            return Response("", status=302, headers={"Location": market.redirect[path]})
        file = market.root / path
        if ".." in path or not file.is_file():
            return Response("not found", status=404)
        data = file.read_bytes()
        if path in market.trickle:

            async def slowly() -> AsyncIterator[bytes]:
                for index in range(len(data)):
                    yield data[index : index + 1]
                    await trio.sleep(0.1)

            return Response(slowly(), headers={"Content-Length": str(len(data))})
        if path in market.drop:

            async def half() -> AsyncIterator[bytes]:
                yield data[: len(data) // 2]
                await trio.sleep(0.05)
                raise ConnectionError("marketplace dropped the connection")

            return Response(half(), headers={"Content-Length": str(len(data))})
        return Response(data, content_type="application/octet-stream")

    return app


async def start_marketplace(nursery: trio.Nursery, root: Path) -> Marketplace:
    """Start a marketplace in ``nursery``; it stops when the nursery is cancelled."""
    market = Marketplace(root)
    await trio.Path(root).mkdir(parents=True, exist_ok=True)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    config.accesslog = None
    binds = await nursery.start(functools.partial(serve, create_app(market), config))
    market.url = binds[0]
    return market
