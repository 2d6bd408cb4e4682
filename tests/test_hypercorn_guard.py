"""An error that escapes Hypercorn in one connection closes that connection, not the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from wstund import hypercorn_guard


async def upgrade_without_request(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering /bad with status 101 to a plain request (h11 refuses it, and
    Hypercorn's fallback 500 then raises outside any handler); everything else is 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    status = 101 if scope["path"] == "/bad" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_failing_connection_leaves_the_server_serving(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    hypercorn_guard.apply()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    stop = trio.Event()
    binds = await nursery.start(
        lambda task_status: serve(
            upgrade_without_request, config, shutdown_trigger=stop.wait, task_status=task_status
        )
    )
    async with httpx.AsyncClient(base_url=binds[0]) as client:
        with trio.fail_after(10):
            for _ in range(3):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/bad")
                assert (await client.get("/ok")).text == "ok"
    assert any("connection dropped" in r.getMessage() for r in caplog.records)
    stop.set()
