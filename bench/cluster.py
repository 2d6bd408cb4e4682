"""Benchmark wstund spread over three nodes sharing a redis-server (issue #18, Benchmark).

Starts, each as its own process, a Debian ``redis-server`` on a free loopback port and three
wstund nodes sharing it, then from this process:

- fan-out: an owner on node 1 broadcasts to N members, first with every member on node 1, then
  with the members spread over the three nodes (same run, same counts): deliveries/s under a
  window of messages in flight, and p50/p99 latency from a timestamp in the payload;
- Redis round trips per relayed frame: PUBLISH calls and all commands Redis processed during
  each phase, divided by the owner's messages;
- the tunnel: one streamed download through the node holding the agent, then through another
  node (proxied node to node), MB/s.

    .venv/bin/python bench/cluster.py [--members 60] [--messages 1000] [--window 16] [--size 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import coredis
import httpx
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from relay import free_port, log, wstund_argv  # noqa: E402
from tunnel import download, wait_http  # noqa: E402

BIN = Path(sys.executable).parent
SECRET = "bench-cluster-secret-0123456789"
CLIENT = "bench"


def start_redis(procs: list[subprocess.Popen[bytes]], tmp: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(tmp)]
    procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
    return f"redis://127.0.0.1:{port}/0"


def start_node(procs: list[subprocess.Popen[bytes]], tmp: Path, redis: str, name: str) -> str:
    port = free_port()
    state = tmp / name
    state.mkdir()
    config = tmp / f"{name}.toml"
    config.write_text(
        f"""[server]
state_dir = "{state}"
max_connections_per_ip = 5000
[admin]
socket = "{tmp / name}.sock"
[relay]
max_members_per_room = 5000
outbox_size = 4096
[cluster]
redis_url = "{redis}"
node_id = "{name}"
secret = "{SECRET}"
[log]
level = "warning"
"""
    )
    argv = wstund_argv(["--bind", f"127.0.0.1:{port}", "--config", str(config)])
    procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    return url


async def redis_counts(redis: coredis.Redis[bytes]) -> tuple[int, int]:
    """(PUBLISH calls, all commands processed) so far."""
    stats = await redis.info("commandstats")
    publish = stats.get("cmdstat_publish", {})
    calls = int(publish.get("calls", 0)) if isinstance(publish, dict) else 0
    total = int((await redis.info("stats"))["total_commands_processed"])
    return calls, total


async def fan_out(
    nodes: list[str], opts: argparse.Namespace, redis: coredis.Redis[bytes]
) -> dict[str, float]:
    """Owner on nodes[0], members round robin over ``nodes``: broadcast figures."""
    ws_urls = [url.replace("http://", "ws://") + "/ws" for url in nodes]
    latencies: list[float] = []
    received = [0] * opts.messages
    window = trio.Semaphore(opts.window)
    async with trio.open_nursery() as nursery:
        owner = await trio_websocket.connect_websocket_url(nursery, ws_urls[0])
        await owner.send_message(
            json.dumps({"type": "create_instance", "service": "chat", "payload": {"name": "b"}})
        )
        uuid = json.loads(await owner.get_message())["payload"]["uuid"]
        members = []
        for i in range(opts.members):
            member = await trio_websocket.connect_websocket_url(
                nursery, ws_urls[i % len(ws_urls)], message_queue_size=opts.messages + 16
            )
            payload = {"uuid": uuid, "userId": f"m{i}"}
            await member.send_message(json.dumps({"type": "join_instance", "payload": payload}))
            assert json.loads(await member.get_message())["type"] == "ack"
            await owner.get_message()  # client_connected
            members.append(member)

        async def read(member: trio_websocket.WebSocketConnection) -> None:
            for _ in range(opts.messages):
                message = json.loads(await member.get_message())
                latencies.append(time.perf_counter() - message["payload"]["t"])
                n = message["payload"]["n"]
                received[n] += 1
                if received[n] == opts.members:
                    window.release()

        before = await redis_counts(redis)
        started = time.perf_counter()
        async with trio.open_nursery() as readers:
            for member in members:
                readers.start_soon(read, member)
            for n in range(opts.messages):
                await window.acquire()
                tick = {"type": "tick", "payload": {"n": n, "t": time.perf_counter()}}
                await owner.send_message(json.dumps(tick))
        elapsed = time.perf_counter() - started
        after = await redis_counts(redis)
        for ws in [owner, *members]:
            await ws.aclose()
        nursery.cancel_scope.cancel()
    q = statistics.quantiles(latencies, n=100)
    return {
        "deliveries_per_s": opts.members * opts.messages / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "publish_per_frame": (after[0] - before[0]) / opts.messages,
        "redis_commands_per_frame": (after[1] - before[1]) / opts.messages,
    }


def start_tunnel(procs: list[subprocess.Popen[bytes]], node: str) -> None:
    """A local app and an agent for it connected to ``node``."""
    app_port = free_port()
    app = [sys.executable, "-m", "tests.localapp", str(app_port)]
    procs.append(subprocess.Popen(app, cwd=ROOT, stdin=subprocess.DEVNULL))
    direct = f"http://127.0.0.1:{app_port}"
    wait_http(direct)
    r = httpx.post(f"{node}/_api/tunnel/clients", json={"id": CLIENT}, timeout=5)
    r.raise_for_status()
    agent = [str(BIN / "wstund-agent"), "--server", node, "--client-id", CLIENT]
    agent += ["--log-level", "warning", direct]
    env = {"WSTUN_TUNNEL_SECRET": r.json()["secret"], "PATH": str(BIN)}
    procs.append(subprocess.Popen(agent, env=env, stdin=subprocess.DEVNULL))
    wait_http(f"{node}/_t/{CLIENT}/cookies", ok=(200,))


async def measure(opts: argparse.Namespace, nodes: list[str], redis_url: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with coredis.Redis.from_url(redis_url) as redis:
        log(f"fan-out, one node: 1 owner + {opts.members} members on node 1")
        results["one_node"] = await fan_out(nodes[:1], opts, redis)
        log(f"fan-out, three nodes: owner on node 1, {opts.members} members spread")
        results["three_nodes"] = await fan_out(nodes, opts, redis)
    size = opts.size * 1024 * 1024
    log(f"tunnel: {opts.size} MB through the agent's node, then through another node")
    results["tunnel_same_node_MB_per_s"] = await download(f"{nodes[0]}/_t/{CLIENT}/bytes", size)
    results["tunnel_cross_node_MB_per_s"] = await download(f"{nodes[1]}/_t/{CLIENT}/bytes", size)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--size", type=int, default=100, help="tunnel download size, MB")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="wstun-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            redis_url = start_redis(procs, tmp)
            nodes = [start_node(procs, tmp, redis_url, f"n{i}") for i in (1, 2, 3)]
            start_tunnel(procs, nodes[0])
            results = trio.run(measure, opts, nodes, redis_url)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"wstund cluster benchmark: 1 owner + {opts.members} members, {opts.messages} broadcasts,"
        f" window {opts.window}; 3 nodes + redis-server on one machine"
    )
    one, three = results["one_node"], results["three_nodes"]
    print(f"{'':34} {'one node':>10} {'3 nodes':>10} {'ratio':>7}")
    rows = [
        ("fan-out deliveries/s", "deliveries_per_s", "{:10,.0f}"),
        ("latency p50, ms", "p50_ms", "{:10.2f}"),
        ("latency p99, ms", "p99_ms", "{:10.2f}"),
        ("PUBLISH per relayed frame", "publish_per_frame", "{:10.2f}"),
        ("Redis commands per relayed frame", "redis_commands_per_frame", "{:10.2f}"),
    ]
    for label, key, fmt in rows:
        ratio = three[key] / one[key] if one[key] else float("nan")
        print(f"{label:34} {fmt.format(one[key])} {fmt.format(three[key])} {ratio:7.2f}")
    same, cross = results["tunnel_same_node_MB_per_s"], results["tunnel_cross_node_MB_per_s"]
    print(f"{'tunnel download MB/s':34} {same:10.1f} {cross:10.1f} {cross / same:7.2f}")


if __name__ == "__main__":
    main()
