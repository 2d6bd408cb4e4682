"""wstund under systemd's eyes: sd_notify datagrams, SIGTERM with sockets open, unit files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from wstund import sdnotify
from wstund.agent import Agent, AgentConfig

from .conftest import recv
from .localapp import pattern_sha256, start_local_app

REPO = Path(__file__).parent.parent
WSTUND = Path(sys.executable).with_name("wstund")


class Notifications:
    """A NOTIFY_SOCKET: a unix datagram socket the daemon writes to."""

    def __init__(self, sock: trio.socket.SocketType, address: str) -> None:
        self.sock = sock
        self.address = address
        self.seen: list[str] = []

    async def next(self) -> str:
        with trio.fail_after(10):
            data = await self.sock.recv(4096)
        self.seen.append(data.decode())
        return self.seen[-1]

    async def until(self, predicate: str, *, seen: bool = False) -> str:
        """Read datagrams until one contains ``predicate`` (or, with ``seen``, one already did)."""
        if seen:
            for message in self.seen:
                if predicate in message:
                    return message
        with trio.fail_after(10):
            while predicate not in (message := await self.next()):
                pass
        return message


@asynccontextmanager
async def notify_socket(abstract: bool = False) -> AsyncIterator[Notifications]:
    with tempfile.TemporaryDirectory(prefix="wstun-") as tmp:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            if abstract:
                name = f"wstund-test-{os.getpid()}"
                await sock.bind("\0" + name)
                yield Notifications(sock, "@" + name)
            else:
                await sock.bind(f"{tmp}/notify")
                yield Notifications(sock, f"{tmp}/notify")


async def start_wstund(
    nursery: trio.Nursery, tmp_path: Path, notify: Notifications, watchdog_usec: int | None
) -> tuple[trio.Process, int, list[str]]:
    """wstund as a child process; returns it, its port and its stderr lines (growing)."""
    config = tmp_path / "wstund.toml"
    sock_dir = tempfile.mkdtemp(prefix="wstun-")
    config.write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\nstate_dir = "{tmp_path}"\nshutdown_grace = 3.0\n'
        f'[admin]\nsocket = "{sock_dir}/admin.sock"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    proc = await trio.lowlevel.open_process(
        [str(WSTUND), "--config", str(config)], env=env, stderr=subprocess.PIPE
    )
    lines: list[str] = []
    port: trio.Event = trio.Event()
    found: list[int] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        buffer = b""
        async for chunk in proc.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                lines.append(line)
                if "listening on http://127.0.0.1:" in line and not found:
                    found.append(int(line.rsplit(":", 1)[1].split(",")[0]))
                    port.set()
        shutil.rmtree(sock_dir, ignore_errors=True)

    nursery.start_soon(read_stderr)
    with trio.move_on_after(20):
        await port.wait()
    if not found:
        proc.kill()
        pytest.fail("wstund did not start:\n" + "\n".join(lines))
    return proc, found[0], lines


async def test_notify_ready_status_watchdog_stopping_and_sigterm_exits_0(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with notify_socket() as notify:
        proc, port, lines = await start_wstund(nursery, tmp_path, notify, watchdog_usec=200_000)
        try:
            assert await notify.next() == "READY=1"
            await notify.until("WATCHDOG=1", seen=True)
            await notify.until("STATUS=0 connections, 0 rooms", seen=True)
            url = f"ws://127.0.0.1:{port}/ws"
            host = await trio_websocket.connect_websocket_url(nursery, url)
            await host.send_message('{"type":"create_instance","service":"chat","id":"c"}')
            uuid = (await recv(host))["payload"]["uuid"]
            member = await trio_websocket.connect_websocket_url(nursery, url)
            join = {"type": "join_instance", "service": "chat", "payload": {"uuid": uuid}}
            await member.send_message(json.dumps(join))
            assert (await recv(member))["payload"]["success"]
            assert (await recv(host))["type"] == "client_connected"
            await notify.until("STATUS=2 connections, 1 rooms, 1 members")
            watchdogs_before = notify.seen.count("WATCHDOG=1")
            await notify.until("WATCHDOG=1")
            assert notify.seen.count("WATCHDOG=1") == watchdogs_before + 1

            proc.send_signal(signal.SIGTERM)
            assert await notify.until("STOPPING=1") == "STOPPING=1"
            for ws in (host, member):
                destroyed = await recv(ws)
                assert destroyed["type"] == "instance_destroyed"
                assert destroyed["payload"]["reason"] == "server_shutdown"
                with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001
            with trio.fail_after(5):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
        order = [m.split("=")[0] for m in notify.seen]
        assert order[0] == "READY" and order[-1] == "STOPPING"
        assert set(order[1:-1]) == {"STATUS", "WATCHDOG"}
        assert any("received SIGTERM" in line for line in lines)


async def test_sigterm_drains_an_in_flight_tunnel_download(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """SIGTERM stops accepting, lets a tunnelled download finish within shutdown_grace, exits 0."""
    n = 8 * 1024 * 1024
    async with notify_socket() as notify:
        proc, port, lines = await start_wstund(nursery, tmp_path, notify, watchdog_usec=None)
        try:
            base = f"http://127.0.0.1:{port}"
            local = await start_local_app(nursery)
            admin = {"X-Admin-Token": (tmp_path / "admin.token").read_text().strip()}
            async with httpx.AsyncClient(timeout=10, headers=admin) as http:
                added = await http.post(f"{base}/_api/tunnel/clients", json={"id": "drain"})
                secret = added.json()["secret"]
                config = AgentConfig(
                    server=base, client_id="drain", secret=secret, target=local.url
                )
                agent = Agent(config)
                nursery.start_soon(agent.run)
                digest, size = hashlib.sha256(), 0
                with trio.fail_after(30):
                    await agent.wait_sessions(1)
                    async with http.stream("GET", f"{base}/_t/drain/bytes?n={n}") as response:
                        async for chunk in response.aiter_raw():
                            if size == 0:
                                proc.send_signal(signal.SIGTERM)
                                await notify.until("STOPPING=1")
                                with pytest.raises(httpx.ConnectError):  # no longer accepting
                                    await httpx.AsyncClient().get(f"{base}/")
                            digest.update(chunk)
                            size += len(chunk)
                            await trio.sleep(0.002)  # a slow caller: the drain has to wait
                    assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    assert size == n and digest.hexdigest() == pattern_sha256(n)
    assert any("received SIGTERM" in line for line in lines)


async def test_notify_abstract_socket_without_watchdog(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with notify_socket(abstract=True) as notify:
        proc, _port, _lines = await start_wstund(nursery, tmp_path, notify, watchdog_usec=None)
        try:
            assert await notify.next() == "READY=1"
            assert (await notify.next()).startswith("STATUS=0 connections")
            proc.send_signal(signal.SIGTERM)
            assert await notify.next() == "STOPPING=1"
            with trio.fail_after(5):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    assert "WATCHDOG=1" not in notify.seen


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None
    assert not sdnotify.Notifier("").enabled


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test.sh installs package systemd)")
    units = []
    for name in ("wstund.service", "wstund.socket"):
        text = (REPO / "systemd" / name).read_text()
        # verify checks that ExecStart exists: point it at this venv's wstund
        text = text.replace("/opt/wstun/bin/wstund", str(WSTUND))
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "wstund.service" in line or "wstund.socket" in line
    ]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr
    service = (REPO / "systemd" / "wstund.service").read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=wstun",
        "RuntimeDirectory=wstun",
        "ConfigurationDirectory=wstun",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ):
        assert line in service
