"""Benchmark a tunnelled WebSocket against the same echo server reached directly (#16).

In one run, every path in front of one origin, a WebSocket echo server (wsproto on trio, in a
process of its own; it echoes each message as it came):

- **direct**: the echo server itself;
- **wstund**: the real daemon (``wstund``) with the agent (``wstund-agent``) forwarding
  ``/_t/bench/…`` to the echo server;
- **before** (with ``--before-src DIR``): the same, with wstund and the agent run from another
  source tree (a ``git archive`` of an earlier commit), to compare two versions in one run.

One load generator, this process, with the hand-written client of bench/wsclient.py, measures
for each path: ``--single`` round trips one at a time on one socket (p50, and what the path adds
to the direct p50), then ``--seconds`` of echoes on ``--concurrency`` sockets with ``--window``
messages in flight on each (messages/s, p50/p99 round trip, and the CPU per message of the
proxy: wstund's daemon and agent together, from psutil). Its own CPU and the echo server's are
printed so that a generator- or origin-bound figure shows as one.

    .venv/bin/python bench/tunnel_ws.py [--seconds 3] [--concurrency 16] [--window 4]
        [--size 100] [--before-src DIR] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from math import nan
from pathlib import Path
from typing import Any

import psutil
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from relay import (  # noqa: E402
    add_wstund_options,
    free_port,
    load_average,
    log,
    ratio_table,
)
from tunnel import Clock, Route, rounds, start_wstund, stop_all  # noqa: E402
from wsclient import HandshakeError, LeanWebSocket  # noqa: E402

PATHS = ["direct", "wstund", "before"]


# -- the echo server (run as ``tunnel_ws.py --echo PORT``) ----------------------------------------


async def echo_connection(stream: trio.SocketStream) -> None:
    """Answer the upgrade, then send every message back as it came; answer pings and close."""
    ws = WSConnection(ConnectionType.SERVER)
    parts: list[Any] = []
    async with stream:
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            ws.receive_data(data)
            out: list[bytes] = []
            try:
                events = list(ws.events())
            except RemoteProtocolError:
                return  # not a WebSocket client
            for event in events:
                if isinstance(event, Request):
                    out.append(ws.send(AcceptConnection()))
                elif isinstance(event, Message):
                    parts.append(event.data)
                    if event.message_finished:
                        if isinstance(event, TextMessage):
                            out.append(ws.send(TextMessage("".join(parts))))
                        else:
                            out.append(ws.send(BytesMessage(b"".join(parts))))
                        parts = []
                elif isinstance(event, Ping):
                    out.append(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    out.append(ws.send(event.response()))
                    await stream.send_all(b"".join(out))
                    return
            if out:
                try:
                    await stream.send_all(b"".join(out))
                except trio.BrokenResourceError:
                    return


def run_echo_server(port: int) -> None:
    """Serve echoes on 127.0.0.1:``port`` until SIGTERM."""

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(trio.serve_tcp, echo_connection, port, host="127.0.0.1")
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve)


# -- the paths ------------------------------------------------------------------------------------


def wait_echo(route: Route) -> None:
    """Poll until an echo comes back on ``route`` (the agent is connected); bounded."""
    deadline = time.monotonic() + 20
    while True:
        try:
            trio.run(round_trips, route, 1, "up")
            return
        except (OSError, HandshakeError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{route.name}: no echo came back") from None
            time.sleep(0.1)


# -- measurements ---------------------------------------------------------------------------------


async def round_trips(route: Route, count: int, payload: str) -> float:
    """p50 (µs) of ``count`` echoes one at a time on one socket."""
    ws = await LeanWebSocket.connect("127.0.0.1", route.port, route.prefix + "/echo")
    latencies = []
    for n in range(count + 20):
        started = time.perf_counter()
        await ws.send(payload)
        if await ws.get_message() != payload:
            raise RuntimeError(f"{route.name}: the echo differs")
        if n >= 20:  # the first ones warm up
            latencies.append(time.perf_counter() - started)
    await ws.aclose()
    return statistics.median(latencies) * 1e6


async def echoes(
    route: Route,
    origin: psutil.Process,
    seconds: float,
    concurrency: int,
    window: int,
    payload: str,
) -> dict[str, float]:
    """``concurrency`` sockets, each keeping ``window`` messages in flight, for ``seconds``."""
    sockets = [
        await LeanWebSocket.connect("127.0.0.1", route.port, route.prefix + "/echo")
        for _ in range(concurrency)
    ]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(ws: LeanWebSocket) -> None:
        sent: list[float] = []
        for _ in range(window):
            sent.append(time.perf_counter())
            await ws.send(payload)
        while sent:
            await ws.get_message()
            now = time.perf_counter()
            latencies.append(now - sent.pop(0))
            if now < deadline:
                sent.append(now)
                await ws.send(payload)

    for ws in sockets:  # warm each socket and the path
        await ws.send(payload)
        await ws.get_message()
    deadline = time.perf_counter() + seconds
    with Clock(route, origin) as clock:
        async with trio.open_nursery() as nursery:
            for ws in sockets:
                nursery.start_soon(caller, ws)
    for ws in sockets:
        await ws.aclose()
    q = statistics.quantiles(latencies, n=100)
    done = len(latencies)
    return {
        "messages_per_s": done / clock.wall,
        "p50_us": q[49] * 1e6,
        "p99_us": q[98] * 1e6,
        "proxy_cpu_us_per_message": 1e6 * clock.proxy / done if route.proxies else nan,
        "daemon_cpu_us_per_message": 1e6 * clock.daemon / done if route.proxies else nan,
        "origin_cpu_us_per_message": 1e6 * clock.origin_cpu / done,
        "generator_cpu_pct": 100 * clock.generator / clock.wall,
        "messages": done,
    }


async def measure(
    opts: argparse.Namespace, routes: dict[str, Route], origin: psutil.Process
) -> list[dict[str, Any]]:
    """``opts.runs`` rounds, each over every path in turn."""
    payload = "x" * opts.size

    async def one_path(name: str, route: Route) -> dict[str, Any]:
        log(f"{name}: {opts.single} round trips, then {opts.seconds}s of echoes")
        single = await round_trips(route, opts.single, payload)
        load = await echoes(route, origin, opts.seconds, opts.concurrency, opts.window, payload)
        return {"single_p50_us": single, **load, "load_1min": os.getloadavg()[0]}

    return await rounds(opts.runs, routes, one_path, "single_p50_us", "added_p50_us")


# -- report ---------------------------------------------------------------------------------------

ROWS = [
    # (key, label, format)
    ("single_p50_us", "round trip one at a time: p50, µs", ",.0f"),
    ("added_p50_us", "round trip p50 added to direct, µs", ",.0f"),
    ("messages_per_s", "echoes, {c} sockets × {w} in flight: messages/s", ",.0f"),
    ("p50_us", "echoes under load: p50, µs", ",.0f"),
    ("p99_us", "echoes under load: p99, µs", ",.0f"),
    ("proxy_cpu_us_per_message", "CPU per echo, wstund daemon + agent, µs", ",.1f"),
    ("daemon_cpu_us_per_message", "  of which wstund's daemon, µs", ",.1f"),
    ("origin_cpu_us_per_message", "CPU per echo, echo server, µs", ",.1f"),
    ("generator_cpu_pct", "echoes: generator CPU %", ".0f"),
    ("load_1min", "machine load average (1 min) when done", ".1f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="echo phase per path (3)")
    parser.add_argument("--concurrency", type=int, default=16, help="sockets under load (16)")
    parser.add_argument("--window", type=int, default=4, help="messages in flight a socket (4)")
    parser.add_argument("--single", type=int, default=500, help="round trips one at a time")
    parser.add_argument("--size", type=int, default=100, help="message size, bytes (100)")
    parser.add_argument("--runs", type=int, default=1, help="rounds over every path (1)")
    parser.add_argument(
        "--before-src", metavar="DIR", help="also run wstund from this source tree ('before')"
    )
    parser.add_argument("--echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    add_wstund_options(parser)
    return parser.parse_args(argv)


def main() -> None:
    opts = parse_args()
    if opts.echo:
        run_echo_server(opts.echo)
        return
    procs: list[subprocess.Popen[bytes]] = []
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wstun-bench-ws-") as tmp:
        try:
            echo_port = free_port()
            echo = subprocess.Popen(
                [sys.executable, __file__, "--echo", str(echo_port)], stdin=subprocess.DEVNULL
            )
            procs.append(echo)
            routes = {"direct": Route("direct", echo_port, "", [])}
            wait_echo(routes["direct"])
            routes["wstund"] = start_wstund(
                procs, Path(tmp), "wstund", echo_port, opts.wstund_src, opts.profile
            )
            wait_echo(routes["wstund"])
            if opts.before_src:
                routes["before"] = start_wstund(
                    procs, Path(tmp), "before", echo_port, opts.before_src, None
                )
                wait_echo(routes["before"])
            runs = trio.run(measure, opts, routes, psutil.Process(echo.pid))
        finally:
            stop_all(procs, bool(opts.profile))
    header = (
        f"wstund tunnelled WebSocket benchmark, {opts.runs} run(s): a wsproto echo server; per "
        f"path {opts.single} round trips one at a time, then {opts.seconds}s of {opts.size} B "
        f"echoes on {opts.concurrency} sockets × {opts.window} in flight; {os.cpu_count()} CPUs, "
        f"nothing pinned; load average {load_before} before, {load_average()} after; run took "
        f"{time.perf_counter() - started:.0f}s"
    )
    rows = [(key, label.format(c=opts.concurrency, w=opts.window), fmt) for key, label, fmt in ROWS]
    text = ratio_table(runs, rows, {}) + "\nmessages/s: higher is better for wstund; µs: lower"
    if opts.json:
        log(f"{header}\n{text}")
        print(json.dumps({"options": vars(opts), "runs": runs}, indent=2))
    else:
        print(f"{header}\n{text}")


if __name__ == "__main__":
    main()
