"""Public /health (MoosicBox's form) and /ready, /metrics with a metrics-only token or on a
loopback metrics listener, with process_* and build_info series."""

from __future__ import annotations

import socket

import httpx
import trio

from wstund import __version__, buildinfo

from .conftest import StartDaemon


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def get(url: str, **headers: str) -> httpx.Response:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            return await http.get(url, headers=headers)


async def test_health_and_ready_are_public(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv", "admin_token": "adm"})
    health = await get(daemon.url + "/health")
    assert health.status_code == 200
    assert health.json() == {"healthy": True, "hash": buildinfo.build_id()}
    ready = await get(daemon.url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "state": "ready"}
    # A page still needs the server token: only the probes are public.
    assert (await get(daemon.url + "/_api/services")).status_code == 401


async def test_ready_is_never_200_once_stopping(start_daemon: StartDaemon) -> None:
    """A probe that reaches a stopping daemon is answered 503 or its connection is closed
    (the listeners are shut and connections that had no request under way are ended): a
    balancer never reads "ready" from a daemon on its way out."""
    daemon = await start_daemon()
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        await stream.send_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n")  # head half sent
        await trio.sleep(0.1)
        daemon.daemon.stop()
        answer = b""
        with trio.fail_after(10):
            try:
                await stream.send_all(b"Connection: close\r\n\r\n")
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            except trio.BrokenResourceError:
                pass
    assert daemon.hub.phase == "stopping"
    assert answer == b"" or (
        answer.startswith(b"HTTP/1.1 503 ") and b'"state":"stopping"' in answer
    ), answer


async def test_metrics_with_a_metrics_only_token(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(
        server={"token": "srv", "admin_token": "adm"}, metrics={"token": "scrape"}
    )
    scraped = await get(daemon.url + "/metrics", Authorization="Bearer scrape")
    assert scraped.status_code == 200
    assert "process_resident_memory_bytes" in scraped.text
    assert "process_open_fds" in scraped.text
    assert f'wstund_build_info{{build="{buildinfo.build_id()}",version="{__version__}"}} 1.0' in (
        scraped.text
    )
    assert (await get(daemon.url + "/metrics")).status_code == 403
    assert (await get(daemon.url + "/metrics", Authorization="Bearer nope")).status_code == 403
    # The metrics token opens nothing else.
    refused = await get(daemon.url + "/_api/services", Authorization="Bearer scrape")
    assert refused.status_code == 401


async def test_metrics_on_a_loopback_metrics_bind_need_no_token(start_daemon: StartDaemon) -> None:
    port = free_port()
    daemon = await start_daemon(
        server={"admin_token": "adm"}, metrics={"bind": f"127.0.0.1:{port}"}
    )
    scraped = await get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200 and "process_cpu_seconds_total" in scraped.text
    assert (await get(f"http://127.0.0.1:{port}/health")).json()["healthy"] is True
    # Only metrics and probes live there.
    assert (await get(f"http://127.0.0.1:{port}/_api/services")).status_code == 404
    assert (await get(daemon.url + "/metrics")).status_code == 403


def test_metrics_bind_must_be_loopback() -> None:
    import pytest

    from wstund.config import ConfigError, parse

    with pytest.raises(ConfigError, match="metrics.bind: '0.0.0.0:9464' is not a loopback"):
        parse('[metrics]\nbind = "0.0.0.0:9464"\n')
    assert parse('[metrics]\nbind = "127.0.0.1:9464"\n').metrics.bind == "127.0.0.1:9464"


async def _listening(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def test_drain_delay_serves_with_ready_503_then_closes(start_daemon: StartDaemon) -> None:
    """With server.drain_delay a stopping daemon keeps accepting and serving while /ready says
    503 (a balancer polling it takes the node out), then closes its listeners."""
    daemon = await start_daemon(server={"drain_delay": 1.0})
    daemon.daemon.stop()
    with trio.fail_after(10):
        while daemon.hub.phase != "stopping":
            await trio.sleep(0.01)
    ready = await get(daemon.url + "/ready")  # a new connection, still accepted
    assert ready.status_code == 503 and ready.json()["state"] == "stopping"
    assert (await get(daemon.url + "/libwstun.js")).status_code == 200
    with trio.fail_after(10):
        while await _listening(daemon.port):
            await trio.sleep(0.05)


async def test_a_second_stop_ends_the_drain_delay(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"drain_delay": 600.0})
    daemon.daemon.stop()
    with trio.fail_after(10):
        while daemon.hub.phase != "stopping":
            await trio.sleep(0.01)
        assert await _listening(daemon.port)
        daemon.daemon.stop()  # a second SIGTERM
        while await _listening(daemon.port):
            await trio.sleep(0.05)
