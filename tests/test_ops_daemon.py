"""Admin socket, /metrics, SIGHUP reload, JSON logs: a real daemon, in process."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import tempfile
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from wstund.daemon import Daemon
from wstund.logs import JsonFormatter

from .conftest import (
    RunningDaemon,
    StartDaemon,
    connect,
    create_room,
    join_room,
    make_config,
    recv,
    send,
)


def admin_client(daemon: RunningDaemon) -> httpx.AsyncClient:
    """An HTTP client on the daemon's admin unix socket."""
    transport = httpx.AsyncHTTPTransport(uds=str(daemon.daemon.admin_socket))
    return httpx.AsyncClient(transport=transport, base_url="http://wstund", timeout=5)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_admin_socket_serves_management_without_token(start_daemon: StartDaemon) -> None:
    running = await start_daemon(server={"admin_token": "adm", "token": "srv"})
    mode = stat.S_IMODE(os.stat(running.daemon.admin_socket).st_mode)
    assert mode == 0o660
    with trio.fail_after(10):
        async with admin_client(running) as client:
            assert (await client.post("/_api/services/chat/disable")).status_code == 200
            assert (await client.get("/_api/status")).json()["services"] == 2
            assert (await client.get("/")).status_code == 404  # pages are not on the socket
        async with httpx.AsyncClient(base_url=running.url) as tcp:
            refused = await tcp.post(
                "/_api/services/chat/enable", headers={"Authorization": "Bearer srv"}
            )
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


async def test_metrics_count_what_happened(start_daemon: StartDaemon) -> None:
    running = await start_daemon(server={"admin_token": "adm"})
    host, uuid = await create_room(running, "chat")
    member = await join_room(running, uuid, "bob", host=host)
    for n in range(3):
        await send(member, "chat_message", {"n": n})
        assert (await recv(host))["payload"] == {"n": n}
    await send(host, "chat_message", {"from": "host"})
    assert (await recv(member))["payload"] == {"from": "host"}
    with trio.fail_after(10):
        async with admin_client(running) as client:
            for _ in range(4):
                assert (await client.get("/_api/status")).status_code == 200
            page = await client.get("/metrics")
        assert page.headers["content-type"].startswith("text/plain")
        found = samples(page.text)
        assert found[("wstund_connections", ())] == 2
        assert found[("wstund_rooms", (("service", "chat"),))] == 1
        assert found[("wstund_rooms", (("service", "fileshare"),))] == 0
        assert found[("wstund_members", (("service", "chat"),))] == 1
        assert found[("wstund_relay_messages_total", (("sender", "member"),))] == 3
        assert found[("wstund_relay_messages_total", (("sender", "owner"),))] == 1
        assert found[("wstund_relay_bytes_total", (("sender", "member"),))] > 0
        assert found[("wstund_slow_consumer_drops_total", ())] == 0
        key = (("method", "GET"), ("status", "200"))
        assert found[("wstund_http_request_seconds_count", key)] == 4
        # over TCP /metrics needs the admin token
        async with httpx.AsyncClient(base_url=running.url) as tcp:
            assert (await tcp.get("/metrics")).status_code == 403
            wrong = await tcp.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403
            scraped = await tcp.get("/metrics", headers={"Authorization": "Bearer adm"})
            assert scraped.status_code == 200
            assert samples(scraped.text)[("wstund_connections", ())] == 2


async def test_metrics_over_tcp_refused_without_admin_token(wstund: RunningDaemon) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=wstund.url) as tcp:
            refused = await tcp.get("/metrics")
            # A daemon always has an admin token (made at first start): it opens /metrics.
            allowed = await tcp.get("/metrics", headers=wstund.admin_headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert allowed.status_code == 200


async def test_sighup_changes_token_live_and_refuses_broken_config(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    socket_dir = tempfile.TemporaryDirectory(prefix="wstun-")
    admin_sock = Path(socket_dir.name) / "admin.sock"
    config_file = tmp_path / "wstund.toml"
    base = f'[server]\nbind = ["127.0.0.1:0"]\nstate_dir = "{tmp_path}"\n'
    base += f'[admin]\nsocket = "{admin_sock}"\n'
    config_file.write_text(base.replace("[admin]", 'token = "old"\n[admin]'))
    daemon = Daemon(
        make_config(tmp_path, {"server": {"token": "old"}, "admin": {"socket": str(admin_sock)}})
    )
    binds = await nursery.start(daemon.run, config_file)
    running = RunningDaemon(daemon, int(binds[0].rsplit(":", 1)[1]), nursery)
    try:
        host, uuid = await create_room(running, query="token=old")
        member = await connect(running, "token=old")
        await send(member, "join_instance", {"uuid": uuid, "userId": "m"}, service="chat")
        assert (await recv(member))["payload"]["success"]
        assert (await recv(host))["type"] == "client_connected"

        config_file.write_text(base.replace("[admin]", 'token = "new"\n[admin]'))
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(5):
            while daemon.hub.config.server.token != "new":  # noqa: ASYNC110
                await trio.sleep(0.01)
        # sockets opened with the old token stay open and keep relaying
        await send(member, "chat_message", {"after": "reload"})
        assert (await recv(host))["payload"] == {"after": "reload"}
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(running.ws_url("/ws", "token=old")):
                pass  # pragma: no cover
        assert rejected.value.status_code == 401
        fresh = await connect(running, "token=new")
        await send(fresh, "list_instances", service="chat", msg_id="l")
        assert [i["uuid"] for i in (await recv(fresh))["payload"]["instances"]] == [uuid]

        config_file.write_text("[server\n")
        caplog.set_level(logging.INFO, "wstund")
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(5):
            while not any("reload refused" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert daemon.hub.config.server.token == "new"
        await send(member, "chat_message", {"after": "refusal"})
        assert (await recv(host))["payload"] == {"after": "refusal"}
    finally:
        daemon.stop()
        socket_dir.cleanup()


def test_json_log_lines_carry_fields() -> None:
    record = logging.LogRecord("wstund.access", logging.INFO, "", 0, "%s done", ("GET",), None)
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET done" and line["status"] == 200
    assert line["level"] == "info" and line["logger"] == "wstund.access"
    assert line["time"].endswith("Z")


async def test_access_log_lines(wstund: RunningDaemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wstund.access")
    host, _uuid = await create_room(wstund)
    await host.aclose(code=4321)  # the client's own close code is what the line records
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=wstund.url) as client:
            await client.get("/_api/instances")
        kinds = {"http", "websocket"}
        while not kinds <= {getattr(r, "kind", "") for r in caplog.records}:  # noqa: ASYNC110
            await trio.sleep(0.01)
    http = [r for r in caplog.records if getattr(r, "kind", "") == "http"]
    assert [(r.method, r.path, r.status) for r in http] == [("GET", "/_api/instances", 200)]  # type: ignore[attr-defined]
    ws = next(r for r in caplog.records if getattr(r, "kind", "") == "websocket")
    assert ws.path == "/ws" and ws.accepted and ws.close_code == 4321  # type: ignore[attr-defined]
    assert ws.bytes_in > 0 and ws.bytes_out > 0  # type: ignore[attr-defined]
