"""Benchmark the MoosicBox-compatible endpoint beside the native tunnel and the direct path.

Starts, each as its own process, wstund, the test suite's local app (``python -m
tests.localapp``), the native agent (``wstund-agent``) and a MoosicBox-format sender (``python
bench/moosicbox.py sender ...``: it answers each HTTP frame from the local app with httpx and
streams the answer as 64 KiB binary packets, as a MoosicBox server does). Then, on each of the
three paths in the same run: small responses by ``--concurrency`` callers (req/s, p50/p99) and
one ``--size`` MB streamed download (MB/s).

    .venv/bin/python bench/moosicbox.py [--requests 2000] [--concurrency 16] [--size 100] [--json]

``start_moosicbox`` (register, start the sender) and ``measure_path`` are what
``bench/tunnel.py`` can call to add a MoosicBox column to its own run: every request carries
``?clientId=`` and the client's ``Authorization`` header.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from relay import admin_headers, free_port, log, wstund_argv  # noqa: E402
from tunnel import wait_http  # noqa: E402

from wstund.moosicbox.wire import encode_packet  # noqa: E402

BIN = Path(sys.executable).parent
CLIENT = "bench-moosicbox"
PACKET_SIZE = 64 * 1024


# -- the sender process ------------------------------------------------------------------------


async def _answer(ws: Any, http: httpx.AsyncClient, frame: dict[str, Any]) -> None:
    """Replay one HTTP frame on the local app; stream the answer back as packets."""
    rid = frame["request_id"]
    query = {k: v for k, v in frame["query"].items() if k != "clientId"}
    headers = dict(frame.get("headers") or {}, **{"user-agent": "MOOSICBOX_TUNNEL"})
    kwargs: dict[str, Any] = {"params": query, "headers": headers}
    if "payload" in frame:
        kwargs["json"] = frame["payload"]
    async with http.stream(frame["method"], "/" + frame["path"], **kwargs) as response:
        head = dict(response.headers)
        packet_id, buffer = 1, bytearray()
        head_size = len(encode_packet(rid, 1, False, b"", response.status_code, head))
        async for chunk in response.aiter_raw():
            buffer += chunk
            while len(buffer) > PACKET_SIZE - (head_size if packet_id == 1 else 13):
                room = PACKET_SIZE - (head_size if packet_id == 1 else 13)
                body, buffer = bytes(buffer[:room]), buffer[room:]
                await ws.send_message(
                    encode_packet(rid, packet_id, False, body, response.status_code, head)
                )
                packet_id += 1
        await ws.send_message(
            encode_packet(rid, packet_id, True, bytes(buffer), response.status_code, head)
        )


async def run_sender(server: str, client_id: str, token: str, local: str) -> None:
    """A MoosicBox-format sender: fetch a signature token, connect, answer until stopped."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{server}/auth/signature-token",
            params={"clientId": client_id},
            headers={"Authorization": token},
        )
        r.raise_for_status()
        signature = r.json()["token"]
    ws_url = server.replace("http", "ws", 1) + f"/ws?clientId={client_id}&sender=true"
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        trio_websocket.open_websocket_url(f"{ws_url}&signature={signature}") as ws,
        httpx.AsyncClient(base_url=local, timeout=60, limits=limits) as http,
        trio.open_nursery() as nursery,
    ):
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == "HTTP":
                nursery.start_soon(_answer, ws, http, frame)


# -- the benchmark ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One way to the local app: base URL, query parameters and headers every request carries."""

    name: str
    base: str
    params: dict[str, str]
    headers: dict[str, str]


def start_moosicbox(
    procs: list[subprocess.Popen[bytes]],
    daemon: str,
    direct: str,
    admin: dict[str, str] | None = None,
) -> Route:
    """Register a MoosicBox client over REST (``admin``: the admin-token header, when the daemon
    keeps one) and start a MoosicBox-format sender process for it, answering from ``direct``."""
    r = httpx.post(
        f"{daemon}/_api/moosicbox/clients", json={"id": CLIENT}, headers=admin or {}, timeout=5
    )
    r.raise_for_status()
    token = r.json()["token"]
    path = Route("moosicbox", daemon, {"clientId": CLIENT}, {"Authorization": token})
    sender = [sys.executable, str(Path(__file__)), "sender", daemon, CLIENT, token, direct]
    procs.append(subprocess.Popen(sender, cwd=ROOT, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 20
    while True:  # the endpoint answers 424 until the sender is connected
        ping = httpx.get(f"{daemon}/cookies", params=path.params, headers=path.headers)
        if ping.status_code == 200:
            return path
        if time.monotonic() > deadline:
            raise SystemExit(f"the MoosicBox sender did not connect ({ping.status_code})")
        time.sleep(0.1)


def start_paths(procs: list[subprocess.Popen[bytes]], tmp: Path) -> list[Route]:
    """wstund, the local app, the native agent and the MoosicBox sender, each its own process."""
    daemon_port, app_port = free_port(), free_port()
    config = tmp / "wstund.toml"
    config.write_text(
        f'[server]\nstate_dir = "{tmp}/state"\n[admin]\nsocket = "{tmp}/admin.sock"\n'
        '[log]\nlevel = "warning"\n'
    )
    argv = wstund_argv(["--bind", f"127.0.0.1:{daemon_port}", "--config", str(config)])
    procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
    app = [sys.executable, "-m", "tests.localapp", str(app_port)]
    procs.append(subprocess.Popen(app, cwd=ROOT, stdin=subprocess.DEVNULL))
    daemon, direct = f"http://127.0.0.1:{daemon_port}", f"http://127.0.0.1:{app_port}"
    wait_http(daemon)
    wait_http(direct)
    admin = admin_headers(tmp / "state")
    r = httpx.post(f"{daemon}/_api/tunnel/clients", json={"id": "bench"}, headers=admin, timeout=5)
    r.raise_for_status()
    agent = [str(BIN / "wstund-agent"), "--server", daemon, "--client-id", "bench"]
    env = {"WSTUN_TUNNEL_SECRET": r.json()["secret"], "PATH": str(BIN)}
    procs.append(subprocess.Popen([*agent, "--log-level", "warning", direct], env=env))
    wait_http(f"{daemon}/_t/bench/cookies", ok=(200,))
    return [
        Route("direct", direct, {}, {}),
        Route("tunnel", f"{daemon}/_t/bench", {}, {}),
        start_moosicbox(procs, daemon, direct, admin),
    ]


async def measure_path(opts: argparse.Namespace, path: Route) -> dict[str, float]:
    """Small requests by ``opts.concurrency`` callers, then one ``opts.size`` MB download."""
    log(f"{path.name}: {opts.requests} small requests, {opts.concurrency} callers")
    latencies: list[float] = []
    remaining = opts.requests
    limits = httpx.Limits(
        max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency
    )
    async with httpx.AsyncClient(headers=path.headers, timeout=60, limits=limits) as http:

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                r = await http.get(f"{path.base}/cookies", params=path.params)
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.status_code

        await http.get(f"{path.base}/cookies", params=path.params)
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(opts.concurrency):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - started
        log(f"{path.name}: {opts.size} MB download")
        size, got = opts.size * 1024 * 1024, 0
        began = time.perf_counter()
        params = {**path.params, "n": str(size)}
        async with http.stream("GET", f"{path.base}/bytes", params=params) as response:
            async for chunk in response.aiter_raw():
                got += len(chunk)
        seconds = time.perf_counter() - began
    assert got == size, (got, size)
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "MB_per_s": size / seconds / 1e6,
    }


async def measure_all(opts: argparse.Namespace, paths: list[Route]) -> dict[str, Any]:
    return {path.name: await measure_path(opts, path) for path in paths}


def main() -> None:
    if sys.argv[1:2] == ["sender"]:
        server, client_id, token, local = sys.argv[2:6]
        trio.run(run_sender, server, client_id, token, local)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=100, help="download size, MB")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="wstun-bench-") as tmp:
        try:
            results = trio.run(measure_all, opts, start_paths(procs, Path(tmp)))
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'MB/s':>8}")
    for name, r in results.items():
        print(
            f"{name:>10} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['MB_per_s']:8.1f}"
        )


if __name__ == "__main__":
    main()
