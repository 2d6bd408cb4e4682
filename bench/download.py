"""Benchmark a fileshare download through the relay (issue #3, Benchmark).

Writes one file (default 200 MB), then in the same run:

- **direct**: hypercorn serves the file over loopback HTTP (a bare ASGI app in its own process);
- **relay binary** / **relay base64**: the daemon (``wstund --bind 127.0.0.1:PORT --config CFG``,
  its own process) relays ``GET /fileshare/download/alice/FILE`` to an owner process (a member of
  a fileshare room, ``tests/fileowner.py``) answering with binary chunk frames or base64
  ``http_response_chunk`` messages.

This process downloads with httpx, checks the byte count and sha256, and samples the serving
process's RSS every 20 ms. Prints MB/s, peak RSS and its growth over the idle RSS, and ratios.

    .venv/bin/python bench/download.py [--size-mb 200] [--chunk-kb 64] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
import trio_websocket

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from relay import free_port, log  # noqa: E402

# Processes are started once per run; blocking for that instant is fine in a benchmark.
# ruff: noqa: ASYNC220

MB = 1_000_000
DIRECT_APP = """
import os, sys
PATH, CHUNK = sys.argv[1], int(sys.argv[2])

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    size = os.path.getsize(PATH)
    headers = [(b"content-type", b"application/octet-stream"),
               (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with open(PATH, "rb") as f:
        while data := f.read(CHUNK):
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
"""


# -- owner process --------------------------------------------------------------------------------


async def owner_main(port: int, path: str, binary: bool, chunk: int) -> None:
    """Create a fileshare room, join it as ``alice`` and serve ``path`` as file id ``f``."""
    from tests.fileowner import FileOwner

    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    url = f"ws://127.0.0.1:{port}/ws"
    async with trio_websocket.open_websocket_url(url) as host:
        create = {"type": "create_instance", "service": "fileshare", "payload": {"name": "b"}}
        await host.send_message(json.dumps(create))
        uuid = json.loads(await host.get_message())["payload"]["uuid"]
        async with trio_websocket.open_websocket_url(url, max_message_size=1 << 24) as member:
            join = {"uuid": uuid, "userId": "alice"}
            message = {"type": "join_instance", "service": "fileshare", "payload": join}
            await member.send_message(json.dumps(message))
            assert json.loads(await member.get_message())["payload"]["success"]
            owner = FileOwner(
                member,
                {"f": (size, lambda offset, n: os.pread(fd, n, offset))},
                binary=binary,
                chunk_size=chunk,
            )
            print("ready", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(owner.run)
                nursery.start_soon(_drain, host)


async def _drain(ws: trio_websocket.WebSocketConnection) -> None:
    while True:
        await ws.get_message()


# -- measuring ------------------------------------------------------------------------------------


async def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    with trio.fail_after(20):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def download(url: str, server: psutil.Process, size: int, digest: str) -> dict[str, Any]:
    """Fetch ``url`` once; MB/s and the server's RSS (idle and peak during the transfer)."""
    idle = server.memory_info().rss
    peak = idle
    done = trio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            with trio.move_on_after(0.02):
                await done.wait()

    received, sha = 0, hashlib.sha256()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        start = time.perf_counter()
        with trio.fail_after(600):
            async with httpx.AsyncClient(timeout=60) as client:
                async with client.stream("GET", url) as response:
                    response.raise_for_status()
                    async for data in response.aiter_raw(1 << 20):
                        received += len(data)
                        sha.update(data)
        elapsed = time.perf_counter() - start
        done.set()
    if received != size or sha.hexdigest() != digest:
        raise RuntimeError(f"{url}: got {received} bytes of {size}, or other bytes")
    return {
        "mb_per_s": size / MB / elapsed,
        "seconds": elapsed,
        "rss_idle_mb": idle / MB,
        "rss_peak_mb": peak / MB,
        "rss_growth_mb": (peak - idle) / MB,
    }


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    chunk = opts.chunk_kb * 1024
    size = opts.size_mb * MB
    results: dict[str, Any] = {"size_mb": opts.size_mb, "chunk_kb": opts.chunk_kb}
    with tempfile.TemporaryDirectory(prefix="wstun-bench-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "file.bin"
        log(f"writing {opts.size_mb} MB")
        sha = hashlib.sha256()
        with path.open("wb") as f:
            for offset in range(0, size, 1 << 20):
                block = os.urandom(min(1 << 20, size - offset))
                sha.update(block)
                f.write(block)
        digest = sha.hexdigest()

        port = free_port()
        argv = [sys.executable, "-m", "hypercorn", "--worker-class", "trio"]
        argv += ["--bind", f"127.0.0.1:{port}", "direct_app:app"]
        # hypercorn passes no arguments to an app: bake the file and chunk size into it.
        app = DIRECT_APP.replace("sys.argv[1]", repr(str(path)))
        (tmp / "direct_app.py").write_text(app.replace("int(sys.argv[2])", str(chunk)))
        env = {**os.environ, "PYTHONPATH": str(tmp)}
        direct = subprocess.Popen(
            argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await wait_listening(direct, port)
            log("direct download")
            url = f"http://127.0.0.1:{port}/"
            results["direct"] = await download(url, psutil.Process(direct.pid), size, digest)
        finally:
            stop(direct)

        port = free_port()
        config = tmp / "wstund.toml"
        (tmp / "state").mkdir()
        config.write_text(
            f'[server]\nstate_dir = "{tmp / "state"}"\n\n'
            f'[admin]\nsocket = "{tmp / "state" / "admin.sock"}"\n\n'
            '[log]\nlevel = "warning"\n'
        )
        wstund_bin = str(Path(sys.executable).parent / "wstund")
        daemon = subprocess.Popen(
            [wstund_bin, "--bind", f"127.0.0.1:{port}", "--config", str(config)],
            stdin=subprocess.DEVNULL,
        )
        try:
            await wait_listening(daemon, port)
            server = psutil.Process(daemon.pid)
            for mode in ("binary", "base64"):
                owner = subprocess.Popen(
                    [sys.executable, __file__, "--owner", str(port), str(path), mode, str(chunk)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                )
                try:
                    assert owner.stdout is not None
                    if owner.stdout.readline().strip() != b"ready":
                        raise RuntimeError("the owner process did not start")
                    log(f"relay download, {mode}")
                    url = f"http://127.0.0.1:{port}/fileshare/download/alice/f"
                    results[f"relay_{mode}"] = await download(url, server, size, digest)
                finally:
                    stop(owner)
        finally:
            stop(daemon)
    return results


def table(results: dict[str, Any]) -> str:
    direct = results["direct"]
    lines = [
        f"{results['size_mb']} MB file, {results['chunk_kb']} KiB chunks, loopback",
        "| path | MB/s | vs direct | server RSS idle → peak (MB) | growth (MB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in ("direct", "relay_binary", "relay_base64"):
        r = results[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {r['mb_per_s']:.0f} | "
            f"{r['mb_per_s'] / direct['mb_per_s']:.2f}× | "
            f"{r['rss_idle_mb']:.0f} → {r['rss_peak_mb']:.0f} | {r['rss_growth_mb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--owner":
        port, path, mode, chunk = sys.argv[2:]
        trio.run(owner_main, int(port), path, mode == "binary", int(chunk))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    opts = parser.parse_args()
    results = trio.run(run, opts)
    print(json.dumps(results, indent=2) if opts.json else table(results))


if __name__ == "__main__":
    main()
