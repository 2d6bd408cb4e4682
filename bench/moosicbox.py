"""Benchmark the MoosicBox-compatible endpoint beside the native tunnel and the direct path.

Runs what ``bench/tunnel.py`` runs (wstund, the test suite's local app and the native agent, each
its own process), plus a MoosicBox-format sender as another process (``python bench/moosicbox.py
sender ...``: it answers each HTTP frame from the local app with httpx and streams the answer as
64 KiB binary packets, as a MoosicBox server does). Then small responses (req/s, p50/p99) and a
``--size`` MB streamed download (MB/s) on each of the three paths, in the same run.

    .venv/bin/python bench/moosicbox.py [--requests 2000] [--concurrency 16] [--size 100] [--json]

``start_moosicbox`` and ``measure_moosicbox`` are what ``bench/tunnel.py`` can call to add the
MoosicBox column to its own run.
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

from relay import log  # noqa: E402
from tunnel import measure as measure_native  # noqa: E402
from tunnel import start, wait_http  # noqa: E402

from wstund.moosicbox.wire import encode_packet  # noqa: E402

CLIENT = "bench-moosicbox"
PACKET_SIZE = 64 * 1024


@dataclass(frozen=True)
class MoosicBoxPath:
    """How a caller reaches the local app through the MoosicBox endpoint."""

    daemon: str
    client_id: str
    token: str

    def params(self, **extra: Any) -> dict[str, Any]:
        return {**extra, "clientId": self.client_id}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.token}


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


def start_moosicbox(
    procs: list[subprocess.Popen[bytes]], daemon: str, direct: str
) -> MoosicBoxPath:
    """Register a MoosicBox client (REST, no admin token set) and start a sender process."""
    r = httpx.post(f"{daemon}/_api/moosicbox/clients", json={"id": CLIENT}, timeout=5)
    r.raise_for_status()
    path = MoosicBoxPath(daemon, CLIENT, r.json()["token"])
    sender = [sys.executable, str(Path(__file__)), "sender", daemon, CLIENT, path.token, direct]
    procs.append(subprocess.Popen(sender, cwd=ROOT, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 20
    while True:  # the endpoint answers 424 until the sender is connected
        ping = httpx.get(f"{daemon}/cookies", params=path.params(), headers=path.headers)
        if ping.status_code == 200:
            return path
        if time.monotonic() > deadline:
            raise SystemExit(f"the MoosicBox sender did not connect ({ping.status_code})")
        time.sleep(0.1)


async def measure_moosicbox(opts: argparse.Namespace, path: MoosicBoxPath) -> dict[str, float]:
    """Small requests and one large download through the MoosicBox endpoint."""
    log(f"moosicbox: {opts.requests} small requests, {opts.concurrency} callers")
    latencies: list[float] = []
    remaining = opts.requests
    limits = httpx.Limits(
        max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency
    )
    async with httpx.AsyncClient(
        base_url=path.daemon, headers=path.headers, timeout=60, limits=limits
    ) as http:

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                r = await http.get("/cookies", params=path.params())
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.status_code

        await http.get("/cookies", params=path.params())
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(opts.concurrency):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - started
        log(f"moosicbox: {opts.size} MB download")
        size, got = opts.size * 1024 * 1024, 0
        began = time.perf_counter()
        async with http.stream("GET", "/bytes", params=path.params(n=size)) as response:
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


async def measure_all(
    opts: argparse.Namespace, direct: str, tunnel: str, path: MoosicBoxPath
) -> dict[str, Any]:
    results = await measure_native(opts, direct, tunnel)
    results["moosicbox"] = await measure_moosicbox(opts, path)
    return results


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
            direct, tunnel = start(procs, Path(tmp))
            daemon = tunnel.rsplit("/_t/", 1)[0]
            wait_http(daemon)
            path = start_moosicbox(procs, daemon, direct)
            results = trio.run(measure_all, opts, direct, tunnel, path)
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
