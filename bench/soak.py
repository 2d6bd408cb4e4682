"""Soak wstund for N minutes under careless traffic, then report whether anything grew.

Starts, each as its own process, the real daemon (``wstund``), the local app
(``python -m tests.localapp``) and a tunnel agent (``wstund-agent``), then runs at once, until
the time is up:

* relay churn: a host creates a room, members join, everyone talks, everyone leaves; again;
* tunnel requests whose callers hang up half-way through a 1 MB body;
* complete tunnel downloads (checked byte for byte in length);
* a config reload (SIGHUP) every 10 s.

After a warm-up it samples the daemon's RSS and open fds; at the end it prints them again with
the agent's reconnects (sessions after the first) and the tracebacks and errors in the daemon's
log. Run by hand (not in CI):

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from relay import admin_headers, free_port, log  # noqa: E402
from tunnel import wait_http  # noqa: E402

BIN = Path(sys.executable).parent
CLIENT = "soak"
MB = 1024 * 1024


@dataclass
class Counts:
    """What the load did, per kind."""

    rooms: int = 0
    messages: int = 0
    hangups: int = 0
    downloads: int = 0
    reloads: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, kind: str, exc: BaseException) -> None:
        key = f"{kind}: {type(exc).__name__}"
        self.failures[key] = self.failures.get(key, 0) + 1


@dataclass
class Processes:
    daemon: subprocess.Popen[bytes]
    app: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes]
    url: str
    daemon_log: Path
    agent_log: Path

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [self.agent, self.app, self.daemon]


def start(tmp: Path) -> Processes:
    """wstund (defaults, but for paths), the local app and one agent."""
    port, app_port = free_port(), free_port()
    config = tmp / "wstund.toml"
    config.write_text(
        f'[server]\nstate_dir = "{tmp}/state"\n[admin]\nsocket = "{tmp}/admin.sock"\n'
        '[log]\nlevel = "warning"\n'
    )
    daemon_log, agent_log = tmp / "wstund.log", tmp / "agent.log"
    argv = [str(BIN / "wstund"), "--bind", f"127.0.0.1:{port}", "--config", str(config)]
    with daemon_log.open("wb") as sink:
        daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=sink)
    app_argv = [sys.executable, "-m", "tests.localapp", str(app_port)]
    app = subprocess.Popen(app_argv, cwd=ROOT, stdin=subprocess.DEVNULL)
    url, direct = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{app_port}"
    wait_http(f"{url}/health", ok=(200,))
    wait_http(direct)
    admin = admin_headers(tmp / "state")
    r = httpx.post(f"{url}/_api/tunnel/clients", json={"id": CLIENT}, headers=admin, timeout=10)
    r.raise_for_status()
    agent_argv = [str(BIN / "wstund-agent"), "--server", url, "--client-id", CLIENT]
    agent_argv += ["--log-level", "info", direct]
    env = {**os.environ, "WSTUN_TUNNEL_SECRET": r.json()["secret"]}
    with agent_log.open("wb") as sink:
        agent = subprocess.Popen(agent_argv, env=env, stdin=subprocess.DEVNULL, stderr=sink)
    wait_http(f"{url}/_t/{CLIENT}/cookies", ok=(200,))
    return Processes(daemon, app, agent, url, daemon_log, agent_log)


def sample(procs: Processes) -> dict[str, Any]:
    """The daemon's resident memory and open fds, the agent's reconnects, the log's troubles."""
    ps = psutil.Process(procs.daemon.pid)
    text = procs.daemon_log.read_text(errors="replace")
    sessions = procs.agent_log.read_text(errors="replace").count("connected to ")
    return {
        "rss_mib": round(ps.memory_info().rss / MB, 1),
        "fds": ps.num_fds(),
        "agent_reconnects": max(0, sessions - 1),
        "tracebacks": text.count("Traceback"),
        "error_lines": sum(1 for line in text.splitlines() if " ERROR " in line),
    }


# -- the load -----------------------------------------------------------------------------------


async def relay_churn(url: str, counts: Counts, members: int = 5, messages: int = 20) -> None:
    """One room's life: create, join, talk, leave."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    async with trio.open_nursery() as nursery:
        host = await trio_websocket.connect_websocket_url(nursery, ws_url)
        await host.send_message(
            json.dumps({"type": "create_instance", "service": "chat", "payload": {"name": "s"}})
        )
        uuid = json.loads(await host.get_message())["payload"]["uuid"]
        people = []
        for n in range(members):
            member = await trio_websocket.connect_websocket_url(nursery, ws_url)
            join = {"uuid": uuid, "userId": f"u{n}"}
            await member.send_message(
                json.dumps({"type": "join_instance", "service": "chat", "payload": join})
            )
            await member.get_message()  # ack
            await host.get_message()  # client_connected
            people.append(member)
        for n in range(messages):
            await people[n % members].send_message(
                json.dumps({"type": "chat_message", "payload": {"text": "x" * 200, "n": n}})
            )
            await host.get_message()
        counts.messages += messages
        for member in people:
            await member.aclose()
        await host.aclose()
    counts.rooms += 1


async def hang_up(http: httpx.AsyncClient, base: str, counts: Counts) -> None:
    """A caller that reads part of a 1 MB tunnelled body and leaves."""
    async with http.stream("GET", f"{base}/bytes?n={MB}") as response:
        async for _ in response.aiter_raw():
            break
    counts.hangups += 1


async def download(http: httpx.AsyncClient, base: str, counts: Counts, size: int = 4 * MB) -> None:
    got = 0
    async with http.stream("GET", f"{base}/bytes?n={size}") as response:
        async for chunk in response.aiter_raw():
            got += len(chunk)
    if got != size:
        raise RuntimeError(f"download returned {got} of {size} bytes")
    counts.downloads += 1


async def loop(kind: str, work: Any, until: float, counts: Counts, pause: float = 0.0) -> None:
    """Repeat ``work()`` until ``until`` (trio clock); each run bounded, failures counted."""
    while trio.current_time() < until:
        try:
            with trio.fail_after(60):
                await work()
        except (Exception, trio.TooSlowError) as exc:  # noqa: B014 - counted, not raised
            counts.failed(kind, exc)
            await trio.sleep(0.5)
        await trio.sleep(pause)


async def reloads(procs: Processes, until: float, counts: Counts) -> None:
    while trio.current_time() + 10 < until:
        await trio.sleep(10)
        procs.daemon.send_signal(signal.SIGHUP)
        counts.reloads += 1


async def soak(procs: Processes, opts: argparse.Namespace) -> dict[str, Any]:
    counts = Counts()
    base = f"{procs.url}/_t/{CLIENT}"
    result: dict[str, Any] = {}
    until = trio.current_time() + opts.minutes * 60
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http, trio.open_nursery() as n:
        for _ in range(2):
            n.start_soon(loop, "relay", lambda: relay_churn(procs.url, counts), until, counts)
        for _ in range(4):
            n.start_soon(loop, "hangup", lambda: hang_up(http, base, counts), until, counts)
        n.start_soon(loop, "download", lambda: download(http, base, counts), until, counts, 0.5)
        n.start_soon(reloads, procs, until, counts)
        await trio.sleep(min(opts.warmup, opts.minutes * 30))
        result["start"] = sample(procs)
        log(f"after warm-up: {result['start']}")
    result["end"] = sample(procs)
    result["load"] = {
        "rooms": counts.rooms,
        "room_messages": counts.messages,
        "callers_hung_up": counts.hangups,
        "downloads": counts.downloads,
        "reloads": counts.reloads,
        "failures": counts.failures,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds before the first sample"
    )
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wstun-soak-") as tmp:
        procs = start(Path(tmp))
        try:
            log(f"soaking for {opts.minutes:g} min")
            result = trio.run(soak, procs, opts)
        finally:
            for proc in procs.all():
                proc.terminate()
            for proc in procs.all():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        result["daemon_exit"] = procs.daemon.returncode
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'':>6} {'RSS MiB':>8} {'fds':>5} {'agent reconnects':>17} {'tracebacks':>11}")
    for when in ("start", "end"):
        r = result[when]
        print(
            f"{when:>6} {r['rss_mib']:8.1f} {r['fds']:5d} {r['agent_reconnects']:17d}"
            f" {r['tracebacks']:11d}"
        )
    print("load:", json.dumps(result["load"]))
    print("daemon exit status:", result["daemon_exit"])


if __name__ == "__main__":
    main()
