"""Benchmark the HTTP tunnel against the same local app reached directly (issue #4, Benchmark).

Starts, each as its own process, the real daemon (``wstund``), the local app
(``python -m tests.localapp``) and the agent (``wstund-agent``), registers a tunnel client over
the REST API, then drives both paths from this process with httpx over loopback: small responses
(requests/s with ``--concurrency`` callers, and p50/p99 latency) and a ``--size`` MB streamed
download (MB/s). Prints the figures and the tunnel's ratio to the direct path.

    .venv/bin/python bench/tunnel.py [--requests 2000] [--concurrency 16] [--size 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from relay import free_port, log, print_profile, wstund_argv  # noqa: E402

BIN = Path(sys.executable).parent
CLIENT = "bench"


def wait_http(url: str, ok: tuple[int, ...] = ()) -> None:
    """Poll ``url`` until something answers (with a status in ``ok``, when given); bounded."""
    deadline = time.monotonic() + 20
    while True:
        try:
            status = httpx.get(url, timeout=1).status_code
            if not ok or status in ok:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.1)


async def small_requests(url: str, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` GETs of a small response by ``concurrency`` callers: req/s, p50, p99 (ms)."""
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                r = await http.get(url)
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.status_code

        await http.get(url)  # warm the connection and the path
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


async def download(url: str, size: int) -> float:
    """MB/s of one streamed download of ``size`` bytes."""
    async with httpx.AsyncClient(timeout=60) as http:
        got = 0
        started = time.perf_counter()
        async with http.stream("GET", f"{url}?n={size}") as response:
            async for chunk in response.aiter_raw():
                got += len(chunk)
        elapsed = time.perf_counter() - started
    assert got == size, (got, size)
    return size / elapsed / 1e6


def start(
    procs: list[subprocess.Popen[bytes]], tmp: Path, profile: str | None = None
) -> tuple[str, str]:
    """Start wstund, the local app and the agent; return (direct URL, tunnel URL)."""
    daemon_port, app_port = free_port(), free_port()
    config = tmp / "wstund.toml"
    config.write_text(
        f'[server]\nstate_dir = "{tmp}/state"\n[admin]\nsocket = "{tmp}/admin.sock"\n'
        '[log]\nlevel = "warning"\n'
    )
    wstund = wstund_argv(["--bind", f"127.0.0.1:{daemon_port}", "--config", str(config)], profile)
    procs.append(subprocess.Popen(wstund, stdin=subprocess.DEVNULL))
    app = [sys.executable, "-m", "tests.localapp", str(app_port)]
    procs.append(subprocess.Popen(app, cwd=ROOT, stdin=subprocess.DEVNULL))
    daemon, direct = f"http://127.0.0.1:{daemon_port}", f"http://127.0.0.1:{app_port}"
    wait_http(daemon)
    wait_http(direct)
    admin = {"X-Admin-Token": (tmp / "state" / "admin.token").read_text().strip()}
    r = httpx.post(f"{daemon}/_api/tunnel/clients", json={"id": CLIENT}, headers=admin, timeout=5)
    r.raise_for_status()
    agent = [str(BIN / "wstund-agent"), "--server", daemon, "--client-id", CLIENT]
    agent += ["--log-level", "warning", direct]
    env = {"WSTUN_TUNNEL_SECRET": r.json()["secret"], "PATH": str(BIN)}
    procs.append(subprocess.Popen(agent, env=env, stdin=subprocess.DEVNULL))
    tunnel = f"{daemon}/_t/{CLIENT}"
    wait_http(f"{tunnel}/cookies", ok=(200,))
    return direct, tunnel


async def measure(opts: argparse.Namespace, direct: str, tunnel: str) -> dict[str, Any]:
    """Small requests and one large download, direct then through the tunnel."""
    results: dict[str, Any] = {}
    for name, base in (("direct", direct), ("tunnel", tunnel)):
        log(f"{name}: {opts.requests} small requests, {opts.concurrency} callers")
        small = await small_requests(f"{base}/cookies", opts.requests, opts.concurrency)
        log(f"{name}: {opts.size} MB download")
        mbps = await download(f"{base}/bytes", opts.size * 1024 * 1024)
        results[name] = {**small, "MB_per_s": mbps}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=100, help="download size, MB")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile", metavar="FILE", help="run wstund under cProfile, write FILE, print the top"
    )
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="wstun-bench-") as tmp:
        try:
            direct, tunnel = start(procs, Path(tmp), opts.profile)
            results = trio.run(measure, opts, direct, tunnel)
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
    direct_r, tunnel_r = results["direct"], results["tunnel"]
    print(f"{'':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'MB/s':>8}")
    for name, r in results.items():
        print(
            f"{name:>10} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['MB_per_s']:8.1f}"
        )
    ratios = [tunnel_r[k] / direct_r[k] for k in ("rps", "p50_ms", "p99_ms", "MB_per_s")]
    print(f"{'ratio':>10} {ratios[0]:9.2f} {ratios[1]:8.2f} {ratios[2]:8.2f} {ratios[3]:8.2f}")
    if opts.profile:
        print_profile(opts.profile)


if __name__ == "__main__":
    main()
