"""Benchmark the HTTP tunnel against nginx ``proxy_pass`` and the origin reached directly (#16).

In one run, every path in front of the same origin, an nginx serving static files (a small file
and a ``--size`` MB one) from a temporary directory:

- **direct**: the origin itself;
- **nginx**: a second nginx whose one location is ``proxy_pass`` to the origin (upstream
  keep-alive on, as a user tuning it would set; everything else Debian's defaults);
- **hypercorn**: Hypercorn's trio worker serving the same files from a minimal ASGI app
  (bench/peers/hypercorn_files.py), not a proxy: the floor of any request Hypercorn serves, as
  wstund's tunnelled ones are (its CPU shows in the proxy rows);
- **wstund**: the real daemon (``wstund``) with the agent (``wstund-agent``) forwarding to the
  origin, registered over the REST API.

nginx is Debian's package, installed by this script with apt-get when it is missing; both
instances run from a generated config on free loopback ports and are stopped by pid.

One load generator, this process, with the hand-written keep-alive client of bench/httpclient.py
measures for each path: ``--seconds`` of small GETs by ``--concurrency`` callers (req/s,
p50/p99, and the CPU seconds per request of the proxy: nginx's, or wstund's daemon and agent
together, from psutil), ``--seconds`` of ``--size`` MiB downloads one after the other (MB/s), and
single requests one at a time (p50, and what the proxy adds to the direct p50). Its own CPU and
the origin's are printed so that a generator- or origin-bound figure shows as one. Prints a
table with wstund's ratio to each.

    .venv/bin/python bench/tunnel.py [--seconds 3] [--concurrency 16] [--size 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from httpclient import LeanHTTP  # noqa: E402
from relay import (  # noqa: E402
    add_wstund_options,
    admin_headers,
    client_cpus,
    ensure_command,
    free_port,
    load_average,
    log,
    print_profile,
    ratio_table,
    server_cpus,
    wstund_argv,
)

BIN = Path(sys.executable).parent
CLIENT = "bench"
SMALL = "/small.txt"
BIG = "/big.bin"
SMALL_BODY = b"x" * 99 + b"\n"
PATHS = ["direct", "nginx", "hypercorn", "wstund"]


# -- nginx ----------------------------------------------------------------------------------------


def ensure_nginx() -> tuple[str, str]:
    """Debian's nginx, installed with apt-get when missing; returns (binary, version)."""
    nginx = ensure_command("nginx", ["nginx"], also=["/usr/sbin/nginx"])
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    return nginx, version.removeprefix("nginx version: ")


def nginx_config(tmp: Path, name: str, port: int, body: str) -> Path:
    """A whole nginx config for one instance: one worker, files under ``tmp``, no access log."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # the worker reads our 0700 temp dir
    temp = "\n".join(
        f"  {kind}_temp_path {tmp}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = tmp / f"{name}.conf"
    path.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
{body.replace("PORT", str(port))}
}}
"""
    )
    return path


def on_cpus(argv: list[str], cpus: list[int] | None) -> list[str]:
    """``argv`` under ``taskset -c CPUS`` when given (taskset execs: the pid is the program's,
    and children such as nginx's workers inherit the CPUs)."""
    taskset = shutil.which("taskset") or "taskset"  # by path: the agent's PATH is the venv's
    return [taskset, "-c", ",".join(map(str, cpus)), *argv] if cpus else argv


def start_nginx(
    procs: list[subprocess.Popen[bytes]],
    nginx: str,
    tmp: Path,
    name: str,
    body: str,
    cpus: list[int] | None = None,
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    config = nginx_config(tmp, name, port, body)
    argv = [nginx, "-e", str(tmp / f"{name}-error.log"), "-p", str(tmp), "-c", str(config)]
    proc = subprocess.Popen(on_cpus(argv, cpus), stdin=subprocess.DEVNULL)
    procs.append(proc)
    return port, proc


# -- the paths ------------------------------------------------------------------------------------


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


@dataclass
class Route:
    """One way to reach the origin: the port to call, the processes doing the proxying."""

    name: str
    port: int
    prefix: str
    proxies: list[psutil.Process]


def tree_cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds of ``procs`` and their children (nginx's workers)."""
    total = 0.0
    for proc in procs:
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    return total


def start_wstund(
    procs: list[subprocess.Popen[bytes]],
    tmp: Path,
    name: str,
    origin_port: int,
    src: str | None,
    profile: str | None,
    cpus: list[int] | None = None,
    agent_cpus: list[int] | None = None,
) -> Route:
    """A daemon (from ``src`` if given) with a client registered over the REST API, and its
    agent forwarding to ``origin_port``, on ``cpus`` and ``agent_cpus`` if given; under
    cProfile writing ``profile`` (and ``profile``.agent) if given. Returns as soon as the daemon
    answers (the agent may still be connecting)."""
    home = tmp / name
    home.mkdir()
    port = free_port()
    config = home / "wstund.toml"
    config.write_text(
        f'[server]\nstate_dir = "{home}/state"\n[admin]\nsocket = "{home}/admin.sock"\n'
        '[log]\nlevel = "warning"\n'
    )
    argv = wstund_argv(["--bind", f"127.0.0.1:{port}", "--config", str(config)], profile, src)
    daemon = subprocess.Popen(on_cpus(argv, cpus), stdin=subprocess.DEVNULL)
    procs.append(daemon)
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    admin = admin_headers(home / "state")
    r = httpx.post(f"{url}/_api/tunnel/clients", json={"id": CLIENT}, headers=admin, timeout=5)
    r.raise_for_status()
    args = ["--server", url, "--client-id", CLIENT, "--log-level", "warning"]
    args.append(f"http://127.0.0.1:{origin_port}")
    agent_argv = wstund_argv(args, f"{profile}.agent" if profile else None, src, "wstund-agent")
    env = {"WSTUN_TUNNEL_SECRET": r.json()["secret"], "PATH": str(BIN)}
    agent = subprocess.Popen(on_cpus(agent_argv, agent_cpus), env=env, stdin=subprocess.DEVNULL)
    procs.append(agent)
    return Route(name, port, f"/_t/{CLIENT}", [psutil.Process(p.pid) for p in (daemon, agent)])


def stop_all(procs: list[subprocess.Popen[bytes]], profiled: bool) -> None:
    """Stop every process, last started first, by pid (SIGINT ends a profiled agent through
    trio's KeyboardInterrupt, so cProfile writes, with a traceback on stderr)."""
    for proc in reversed(procs):
        agent = profiled and "wstund-agent" in str(proc.args)
        proc.send_signal(signal.SIGINT if agent else signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_all(
    procs: list[subprocess.Popen[bytes]], tmp: Path, opts: argparse.Namespace, nginx: str
) -> tuple[dict[str, Route], psutil.Process]:
    """The origin, then each path in ``opts.paths`` in front of it."""
    www = tmp / "www"
    www.mkdir()
    (www / SMALL.lstrip("/")).write_bytes(SMALL_BODY)
    with open(www / BIG.lstrip("/"), "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(opts.size):
            f.write(block)
    proxy_cpus, origin_cpus = server_cpus(opts), client_cpus(opts)
    origin_port, origin = start_nginx(
        procs,
        nginx,
        tmp,
        "origin",
        f"  server {{ listen 127.0.0.1:PORT; root {www}; }}",
        origin_cpus,
    )
    wait_http(f"http://127.0.0.1:{origin_port}{SMALL}", ok=(200,))
    paths = {"direct": Route("direct", origin_port, "", [])}
    if "nginx" in opts.paths:
        body = f"""  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:PORT;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
        port, proc = start_nginx(procs, nginx, tmp, "proxy", body, proxy_cpus)
        wait_http(f"http://127.0.0.1:{port}{SMALL}", ok=(200,))
        paths["nginx"] = Route("nginx", port, "", [psutil.Process(proc.pid)])
    if "hypercorn" in opts.paths:
        port = free_port()
        script = ROOT / "bench" / "peers" / "hypercorn_files.py"
        argv = [sys.executable, str(script), str(port), str(www)]
        proc = subprocess.Popen(on_cpus(argv, proxy_cpus))
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}{SMALL}", ok=(200,))
        paths["hypercorn"] = Route("hypercorn", port, "", [psutil.Process(proc.pid)])
    if "wstund" in opts.paths:
        paths["wstund"] = start_wstund(
            procs,
            tmp,
            "wstund",
            origin_port,
            opts.wstund_src,
            opts.profile,
            proxy_cpus,
            origin_cpus,  # the agent runs beside the origin, as on a user's machine
        )
        wait_http(f"http://127.0.0.1:{paths['wstund'].port}/_t/{CLIENT}{SMALL}", ok=(200,))
    return paths, psutil.Process(origin.pid)


# -- measurements ---------------------------------------------------------------------------------


class Clock:
    """Wall time and CPU seconds of the proxy, the origin and this generator over a phase."""

    def __init__(self, route: Route, origin: psutil.Process) -> None:
        self.route, self.origin, self.me = route, origin, psutil.Process()

    def _now(self) -> tuple[float, float, float, float, float]:
        mine = self.me.cpu_times()
        return (
            time.perf_counter(),
            tree_cpu(self.route.proxies),
            tree_cpu(self.route.proxies[:1]),
            tree_cpu([self.origin]),
            mine.user + mine.system,
        )

    def __enter__(self) -> Clock:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.wall, self.proxy, self.daemon, self.origin_cpu, self.generator = (
            b - a for a, b in zip(self.start, end, strict=True)
        )


async def small_requests(
    route: Route, origin: psutil.Process, seconds: float, concurrency: int
) -> dict[str, float]:
    """Small GETs by ``concurrency`` keep-alive callers for ``seconds`` (long enough for the
    CPU clocks, which tick every 10 ms, to count the fastest path's work)."""
    latencies: list[float] = []
    clients = [LeanHTTP("127.0.0.1", route.port) for _ in range(concurrency)]
    url = route.prefix + SMALL
    deadline = time.perf_counter() + seconds

    async def caller(http: LeanHTTP) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, size = await http.get(url)
            latencies.append(time.perf_counter() - started)
            if status != 200 or size != len(SMALL_BODY):
                raise RuntimeError(f"{route.name}: {url} answered {status} with {size} bytes")

    for http in clients:  # warm each connection and the path
        await http.get(url)
    deadline = time.perf_counter() + seconds
    with Clock(route, origin) as clock:
        async with trio.open_nursery() as nursery:
            for http in clients:
                nursery.start_soon(caller, http)
    for http in clients:
        await http.close()
    q = statistics.quantiles(latencies, n=100)
    done = len(latencies)
    return {
        "rps": done / clock.wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "proxy_cpu_ms_per_request": 1000 * clock.proxy / done if route.proxies else nan,
        "daemon_cpu_ms_per_request": 1000 * clock.daemon / done if len(route.proxies) > 1 else nan,
        "origin_cpu_ms_per_request": 1000 * clock.origin_cpu / done,
        "generator_cpu_pct": 100 * clock.generator / clock.wall,
        "requests": done,
    }


async def single_requests(route: Route, count: int) -> float:
    """p50 (ms) of ``count`` small GETs one at a time on one keep-alive connection."""
    http = LeanHTTP("127.0.0.1", route.port)
    url = route.prefix + SMALL
    latencies = []
    for n in range(count + 20):
        started = time.perf_counter()
        await http.get(url)
        if n >= 20:  # the first ones warm up
            latencies.append(time.perf_counter() - started)
    await http.close()
    return statistics.median(latencies) * 1000


async def download(
    route: Route, origin: psutil.Process, size: int, seconds: float
) -> dict[str, float]:
    """Streamed downloads of ``size`` bytes, one after the other on one connection, until
    ``seconds`` have passed (at least one): MB/s, and the proxy's and the generator's CPU."""
    http = LeanHTTP("127.0.0.1", route.port)
    count = 0
    with Clock(route, origin) as clock:
        deadline = time.perf_counter() + seconds
        while not count or time.perf_counter() < deadline:
            status, got = await http.get(route.prefix + BIG)
            if status != 200 or got != size:
                raise RuntimeError(f"{route.name}: download answered {status}, {got}/{size} bytes")
            count += 1
    await http.close()
    return {
        "MB_per_s": count * size / clock.wall / 1e6,
        "downloads": count,
        "download_proxy_cpu_pct": 100 * clock.proxy / clock.wall if route.proxies else nan,
        "download_generator_cpu_pct": 100 * clock.generator / clock.wall,
    }


async def measure(
    opts: argparse.Namespace, routes: dict[str, Route], origin: psutil.Process
) -> list[dict[str, Any]]:
    """``opts.runs`` rounds, each over every path in turn."""

    async def one_path(name: str, route: Route) -> dict[str, Any]:
        log(f"{name}: small GETs for {opts.seconds}s, {opts.concurrency} callers")
        small = await small_requests(route, origin, opts.seconds, opts.concurrency)
        log(f"{name}: {opts.single} single GETs, then {opts.size} MiB downloads")
        single = await single_requests(route, opts.single)
        big = (
            await download(route, origin, opts.size * 1024 * 1024, opts.seconds)
            if opts.size
            else {}
        )
        return {**small, "single_p50_ms": single, **big, "load_1min": os.getloadavg()[0]}

    return await rounds(opts.runs, routes, one_path, "single_p50_ms", "added_p50_ms")


async def rounds(
    count: int,
    routes: dict[str, Route],
    one_path: Callable[[str, Route], Awaitable[dict[str, Any]]],
    single: str,
    added: str,
) -> list[dict[str, Any]]:
    """``count`` rounds of ``one_path`` over every path in turn; each path's figures get
    ``added``: what its ``single`` (a one-at-a-time p50) adds to direct's in that round."""
    runs = []
    for round_ in range(count):
        if count > 1:
            log(f"run {round_ + 1}/{count}")
        results = {name: await one_path(name, route) for name, route in routes.items()}
        direct = results["direct"][single]
        for figures in results.values():
            figures[added] = figures[single] - direct
        runs.append(results)
    return runs


# -- report ---------------------------------------------------------------------------------------

ROWS = [
    # (key, label, format)
    ("rps", "small GETs, {c} concurrent: req/s", ",.0f"),
    ("p50_ms", "small GETs: p50, ms", ".2f"),
    ("p99_ms", "small GETs: p99, ms", ".2f"),
    ("proxy_cpu_ms_per_request", "CPU per request, proxy (wstund: daemon + agent), ms", ".3f"),
    ("daemon_cpu_ms_per_request", "  of which wstund's daemon, ms", ".3f"),
    ("origin_cpu_ms_per_request", "CPU per request, origin, ms", ".3f"),
    ("generator_cpu_pct", "small GETs: generator CPU %", ".0f"),
    ("MB_per_s", "{s} MiB downloads, MB/s", ",.0f"),
    ("download_proxy_cpu_pct", "download: proxy CPU %", ".0f"),
    ("download_generator_cpu_pct", "download: generator CPU %", ".0f"),
    ("single_p50_ms", "single request p50, ms", ".3f"),
    ("added_p50_ms", "single request p50 added to direct, ms", ".3f"),
    ("load_1min", "machine load average (1 min) when done", ".1f"),
]


def table(runs: list[dict[str, dict[str, Any]]], opts: argparse.Namespace) -> str:
    measured = runs[0]["direct"]  # rows of a phase not run (--size 0) are left out
    rows = [
        (key, label.format(c=opts.concurrency, s=opts.size), fmt)
        for key, label, fmt in ROWS
        if key in measured or key == "added_p50_ms"
    ]
    return ratio_table(runs, rows, {}) + "\nreq/s, MB/s: higher is better for wstund; ms: lower"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"which of {','.join(PATHS)} (all)"
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="length of each load phase per path (3)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--single", type=int, default=500, help="single GETs one at a time (500)")
    parser.add_argument("--size", type=int, default=100, help="download MiB (100; 0: none)")
    parser.add_argument("--runs", type=int, default=1, help="rounds over every path (1)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="don't pin: by default the server under test (the nginx proxy, Hypercorn, wstund's"
        " daemon) runs on the second CPU; the generator, the origin and wstund's agent (which"
        " runs beside the origin on a user's machine) on the first",
    )
    add_wstund_options(parser)
    opts = parser.parse_args(argv)
    opts.paths = [p.strip() for p in opts.paths.split(",") if p.strip()]
    if set(opts.paths) - set(PATHS):
        parser.error(f"--paths takes {','.join(PATHS)}")
    return opts


def main() -> None:
    opts = parse_args()
    opts.cpus = sorted(psutil.Process().cpu_affinity() or [])
    if client_cpus(opts):
        psutil.Process().cpu_affinity(client_cpus(opts))
    nginx, version = ensure_nginx()
    procs: list[subprocess.Popen[bytes]] = []
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wstun-bench-") as tmp:
        try:
            routes, origin = start_all(procs, Path(tmp), opts, nginx)
            runs = trio.run(measure, opts, routes, origin)
        finally:
            stop_all(procs, bool(opts.profile))
    pinning = (
        f"server under test pinned to {server_cpus(opts)}, generator, origin and agent to "
        f"{client_cpus(opts)}"
        if server_cpus(opts)
        else "nothing pinned"
    )
    header = (
        f"wstund tunnel benchmark, {opts.runs} run(s): origin nginx {version} (static files); "
        f"per path {opts.seconds}s of small GETs ({len(SMALL_BODY)} B) by {opts.concurrency} "
        f"callers and of {opts.size} MiB downloads, {opts.single} single GETs; "
        f"{os.cpu_count()} CPUs, {pinning}; load average {load_before} before, "
        f"{load_average()} after; run took {time.perf_counter() - started:.0f}s"
    )
    text = table(runs, opts)
    if opts.json:
        log(f"{header}\n{text}")
        out = {"options": vars(opts), "nginx": version, "load_average": load_before}
        print(json.dumps({**out, "runs": runs}, indent=2))
    else:
        print(f"{header}\n{text}")
    if opts.profile:
        print_profile(opts.profile)
        print_profile(f"{opts.profile}.agent")


if __name__ == "__main__":
    main()
