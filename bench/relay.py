"""Benchmark the wstund room relay against the servers a user would pick instead (issue #16).

In one run, one after the other, each as its own process pinned to one CPU (``taskset -c 1``):

- **wstund**, the real daemon (``wstund --bind 127.0.0.1:PORT --config CFG``);
- **baseline**, a raw ``trio_websocket.serve_websocket`` room server (bench/baseline_server.py);
- **socket.io**, Socket.IO 4.8 on Node (bench/peers/socketio_server.js);
- **python-socketio**, python-socketio 5 on uvicorn (bench/peers/pysocketio_server.py).

The two Socket.IO peers are installed by this script into bench/.peers/ (git-ignored): socket.io
from the npm registry with ``npm install``, python-socketio and uvicorn from PyPI into a venv of
their own. Every server implements the same room: an owner's message goes to every member, a
member's to the owner and the other members.

One load generator, this process, pinned to the other CPU (``taskset -c 0`` equivalent), drives
every server over loopback with the hand-written client of bench/wsclient.py, speaking each
server's protocol (the WSTun envelope, the baseline's paths, Engine.IO v4 / Socket.IO over a raw
WebSocket). It measures resident memory per idle joined connection, connect + join handshakes per
second, round trips one at a time, and, for a room of 1 owner + N members, owner → all members
broadcast and member → room fan-out: throughput under a window of messages in flight, the
latency of each delivery (from a timestamp in the payload), and the server's CPU seconds (psutil
on its pid) → deliveries per server CPU-second. The generator's own CPU is printed next to each
load so that a generator-bound figure shows as one. Prints a table with wstund's ratio to each.

    .venv/bin/python bench/relay.py [--servers wstund,baseline,socket.io,python-socketio]
        [--members 50] [--messages 2000] [--idle 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from math import nan
from pathlib import Path
from typing import Any

import msgspec
import psutil
import trio

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from wsclient import LeanWebSocket, Sink  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"
NODE_DIR = PEERS_DIR / "node"
PYSIO_VENV = PEERS_DIR / "python-socketio"
SOCKETIO_SPEC = "socket.io@4.8"
PYSIO_SPECS = ["python-socketio>=5,<6", "uvicorn[standard]"]
SERVERS = ["wstund", "baseline", "socket.io", "python-socketio"]


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


# -- the peers, installed by the bench itself -----------------------------------------------------


def ensure_command(name: str, packages: list[str], also: Sequence[str] = ()) -> str:
    """The path of command ``name`` (or of one of ``also``), installing Debian ``packages`` with
    apt-get when it is missing. A package's own service start is held back (policy-rc.d exit
    101), so that no server runs but those a bench starts and stops by pid."""
    found = shutil.which(name) or next((p for p in also if Path(p).exists()), None)
    if found:
        return found
    log(f"installing {' '.join(packages)} with apt-get")
    sudo = ["sudo"] if os.geteuid() != 0 and shutil.which("sudo") else []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    made = not policy.exists() and not sudo
    if made:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        install = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
        if subprocess.run(install, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(install, env=env, stdin=subprocess.DEVNULL, check=True)
    finally:
        if made:
            policy.unlink()
    found = shutil.which(name) or next((p for p in also if Path(p).exists()), None)
    if not found:
        raise SystemExit(f"{name} is still missing after installing {packages}")
    return found


def ensure_socketio() -> str:
    """socket.io 4.8 in bench/.peers/node from the npm registry (once); returns its version."""
    package = NODE_DIR / "node_modules" / "socket.io" / "package.json"
    node = ensure_command("node", ["nodejs", "npm"])
    npm = ensure_command("npm", ["npm"])
    if not package.exists():
        log(f"installing {SOCKETIO_SPEC} into {NODE_DIR} with npm")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), SOCKETIO_SPEC]
            + ["--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return f"socket.io {json.loads(package.read_text())['version']}, node {version.stdout.strip()}"


def ensure_python_socketio() -> str:
    """python-socketio 5 and uvicorn in their own venv under bench/.peers (once); the versions."""
    python = PYSIO_VENV / "bin" / "python"
    probe = [
        str(python),
        "-c",
        "import importlib.metadata as m, socketio, uvicorn; "
        "print(*(f'{p} {m.version(p)}' for p in ('python-socketio', 'uvicorn', 'websockets')),"
        " sep=', ')",
    ]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        log(f"installing {' '.join(PYSIO_SPECS)} into {PYSIO_VENV} with pip")
        subprocess.run([sys.executable, "-m", "venv", str(PYSIO_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PYSIO_SPECS],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


# -- the servers ----------------------------------------------------------------------------------


def admin_headers(state: Path) -> dict[str, str]:
    """The admin-token header for a daemon whose state dir is ``state``: a first start makes
    the token and keeps it there (``admin.token``); none before it exists."""
    token = state / "admin.token"
    return {"X-Admin-Token": token.read_text().strip()} if token.exists() else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wstund_config(path: Path, state: Path, opts: argparse.Namespace) -> None:
    """A config raising the limits the benchmark needs; everything else is the default."""
    connections = opts.idle + opts.members + 1000
    path.write_text(
        f"""[server]
max_connections = {max(10_000, connections)}
max_connections_per_ip = {connections}
state_dir = "{state}"

[admin]
socket = "{state / "admin.sock"}"

[relay]
max_members_per_room = {max(1000, opts.idle + opts.members + 100)}
outbox_size = {max(256, 4 * opts.window, opts.idle + opts.members + 100)}

[log]
level = "warning"
"""
    )


@dataclass
class Server:
    """A server process under test and how the clients speak to it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    speak: Dialect
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def established(self) -> int:
        """TCP connections the server process holds open."""
        return sum(1 for c in self.ps.net_connections("tcp") if c.status == "ESTABLISHED")


def server_cpus(opts: argparse.Namespace) -> list[int] | None:
    """With two CPUs or more, the server gets the second (taskset -c 1), the generator the first."""
    return opts.cpus[1:2] if opts.pin and len(opts.cpus) >= 2 else None


def client_cpus(opts: argparse.Namespace) -> list[int] | None:
    return opts.cpus[:1] if opts.pin and len(opts.cpus) >= 2 else None


def pinned(argv: list[str], opts: argparse.Namespace) -> list[str]:
    """``argv`` under ``taskset -c CPU`` when pinning (taskset execs: the pid is the server's)."""
    cpus = server_cpus(opts)
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv] if cpus else argv


ENTRY_POINTS = {"wstund": "wstund.daemon", "wstund-agent": "wstund.agent"}


def wstund_argv(
    args: list[str], profile: str | None = None, src: str | None = None, program: str = "wstund"
) -> list[str]:
    """The command that runs ``program`` (wstund or wstund-agent) with ``args``, under cProfile
    writing ``profile`` if given (written when it stops on SIGTERM), from the source tree ``src``
    if given (a ``git archive`` of another version, say, to compare two with one bench: ``-S``
    keeps this checkout's editable install from shadowing it, the venv's packages stay
    importable)."""
    if not profile and not src:
        return [str(Path(sys.executable).parent / program), *args]
    code = "import sys; "
    flags = []
    if src:
        flags = ["-S"]
        code += f"sys.path[:0] = [{src!r}, {sysconfig.get_paths()['purelib']!r}]; "
        # The wheel maps the top-level static/ to wstund.static (pyproject's package-dir).
        code += f"import wstund; wstund.__path__.append({src!r}); "
    code += f"from {ENTRY_POINTS[program]} import main; sys.argv = [{program!r}, *{args!r}]; "
    code += f"import cProfile; cProfile.run('main()', {profile!r})" if profile else "main()"
    return [sys.executable, *flags, "-c", code]


def start_wstund(tmp: Path, opts: argparse.Namespace) -> Server:
    port = free_port()
    config = tmp / "wstund.toml"
    (tmp / "state").mkdir(exist_ok=True)
    wstund_config(config, tmp / "state", opts)
    args = ["--bind", f"127.0.0.1:{port}", "--config", str(config)]
    argv = wstund_argv(args, opts.profile, opts.wstund_src)
    proc = subprocess.Popen(pinned(argv, opts), stdin=subprocess.DEVNULL)
    return Server("wstund", proc, port, WstundDialect(port))


def start_baseline(tmp: Path, opts: argparse.Namespace) -> Server:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "baseline_server.py"), str(port)]
    proc = subprocess.Popen(pinned(argv, opts), stdin=subprocess.DEVNULL)
    return Server("baseline", proc, port, BaselineDialect(port))


def start_socketio(tmp: Path, opts: argparse.Namespace) -> Server:
    port = free_port()
    argv = ["node", str(BENCH_DIR / "peers" / "socketio_server.js"), str(port)]
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules"), "NODE_ENV": "production"}
    proc = subprocess.Popen(pinned(argv, opts), stdin=subprocess.DEVNULL, env=env)
    return Server("socket.io", proc, port, SocketIODialect(port))


def start_python_socketio(tmp: Path, opts: argparse.Namespace) -> Server:
    port = free_port()
    argv = [str(PYSIO_VENV / "bin" / "python"), str(BENCH_DIR / "peers" / "pysocketio_server.py")]
    proc = subprocess.Popen(pinned([*argv, str(port)], opts), stdin=subprocess.DEVNULL)
    return Server("python-socketio", proc, port, SocketIODialect(port))


STARTERS: dict[str, Callable[[Path, argparse.Namespace], Server]] = {
    "wstund": start_wstund,
    "baseline": start_baseline,
    "socket.io": start_socketio,
    "python-socketio": start_python_socketio,
}


async def wait_listening(server: Server, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def stop(server: Server, timeout: float = 15.0) -> int | None:
    """SIGTERM (wstund stops gracefully), then SIGKILL if it has not gone within ``timeout``."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        return await trio.to_thread.run_sync(server.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        log(f"{server.name} did not stop within {timeout}s: killing it")
        server.proc.kill()
        return await trio.to_thread.run_sync(server.proc.wait)


# -- speaking to each server ----------------------------------------------------------------------


class Dialect:
    """How a client opens a room, joins it, sends a room message and asks for an echo on one
    server; ``bench_prefix`` starts every delivered bench message, whose JSON body is
    ``frame[body_start:body_end]``."""

    bench_prefix = b'{"type":"bench"'
    body_start, body_end = 0, None

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self, path: str) -> LeanWebSocket:
        return await LeanWebSocket.connect("127.0.0.1", self.port, path)

    async def open_owner(self, room: str) -> tuple[LeanWebSocket, str]:
        raise NotImplementedError

    async def open_member(self, room: str, user_id: str) -> LeanWebSocket:
        raise NotImplementedError

    async def open_echo(self) -> LeanWebSocket:
        raise NotImplementedError

    def echo_request(self, n: int) -> str:
        return f'{{"type":"ping","id":{n}}}'

    def room_message(self, body: str) -> str:
        """The frame that sends ``body`` (a JSON object) to the sender's room."""
        return body


class WstundDialect(Dialect):
    """The WSTun envelope on /ws; the echo is the server's own ``ping`` → ``pong``."""

    async def open_owner(self, room: str) -> tuple[LeanWebSocket, str]:
        ws = await self.open("/ws")
        request = {"type": "create_instance", "id": 1, "service": "chat", "payload": {"name": room}}
        await ws.send(json.dumps(request))
        reply = json.loads(await ws.get_message())
        if reply.get("type") != "instance_created" or not reply["payload"].get("success"):
            raise RuntimeError(f"create_instance refused: {reply}")
        return ws, str(reply["payload"]["uuid"])

    async def open_member(self, room: str, user_id: str) -> LeanWebSocket:
        ws = await self.open("/ws")
        request = {"type": "join_instance", "id": 1, "payload": {"uuid": room, "userId": user_id}}
        await ws.send(json.dumps(request))
        reply = json.loads(await ws.get_message())
        if reply.get("type") != "ack" or not reply["payload"].get("success"):
            raise RuntimeError(f"join_instance refused: {reply}")
        return ws

    async def open_echo(self) -> LeanWebSocket:
        return await self.open("/ws")


class BaselineDialect(Dialect):
    """bench/baseline_server.py: the room and the role are in the path."""

    async def open_owner(self, room: str) -> tuple[LeanWebSocket, str]:
        return await self.open(f"/owner/{room}"), room

    async def open_member(self, room: str, user_id: str) -> LeanWebSocket:
        ws = await self.open(f"/member/{room}")
        reply = await ws.get_message()
        if reply != "joined":
            raise RuntimeError(f"baseline join refused: {reply!r}")
        return ws

    async def open_echo(self) -> LeanWebSocket:
        return await self.open("/echo")


class SocketIODialect(Dialect):
    """Socket.IO 5 (protocol) over Engine.IO 4 on a raw WebSocket, as socket.io-client speaks it
    with ``transports: ["websocket"]``: the server opens with ``0{...}``, the client connects
    the default namespace with ``40`` and waits for ``40{"sid":...}``; events are
    ``42["name",data]``; the server's ping ``2`` is answered ``3``."""

    bench_prefix = b'42["msg",{"type":"bench"'
    body_start, body_end = len(b'42["msg",'), -1

    async def open(self, path: str) -> LeanWebSocket:
        ws = await LeanWebSocket.connect(
            "127.0.0.1", self.port, "/socket.io/?EIO=4&transport=websocket"
        )
        ws.auto_replies[b"2"] = b"3"
        opened = await ws.get_message()
        if not opened.startswith("0{"):
            raise RuntimeError(f"Engine.IO open expected, got {opened!r}")
        await ws.send("40")
        connected = await ws.get_message()
        if not connected.startswith("40"):
            raise RuntimeError(f"Socket.IO connect refused: {connected!r}")
        return ws

    async def open_owner(self, room: str) -> tuple[LeanWebSocket, str]:
        return await self.open_member(room, "owner"), room

    async def open_member(self, room: str, user_id: str) -> LeanWebSocket:
        ws = await self.open("")
        await ws.send(f'42["join",{json.dumps(room)}]')
        reply = await ws.get_message()
        if reply != '42["joined"]':
            raise RuntimeError(f"Socket.IO join refused: {reply!r}")
        return ws

    async def open_echo(self) -> LeanWebSocket:
        return await self.open("")

    def echo_request(self, n: int) -> str:
        return f'42["echo",{n}]'

    def room_message(self, body: str) -> str:
        return f'42["msg",{body}]'


# -- clients --------------------------------------------------------------------------------------


class Client:
    """A connection whose messages are read at once by its own task and handed to ``sink``."""

    def __init__(self, ws: LeanWebSocket, name: str) -> None:
        self.ws = ws
        self.name = name
        self.sink: Sink = lambda frame, now: None
        self.reading = False

    async def read(self) -> None:
        self.reading = True
        await self.ws.read_into(lambda frame, now: self.sink(frame, now))

    @property
    def closed(self) -> str | None:
        return self.ws.closed


async def open_many(
    count: int, opener: Callable[[int], Awaitable[LeanWebSocket]], parallel: int = 64
) -> list[LeanWebSocket]:
    """Open ``count`` connections, ``parallel`` handshakes at a time."""
    opened: list[LeanWebSocket | None] = [None] * count
    limiter = trio.CapacityLimiter(parallel)

    async def one(i: int) -> None:
        async with limiter:
            opened[i] = await opener(i)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return [ws for ws in opened if ws is not None]


async def close_all(
    connections: Sequence[LeanWebSocket | Client], timeout: float = 20.0, parallel: int = 256
) -> None:
    """Close handshakes, ``parallel`` at a time, bounded; the caller cancels what is left."""
    limiter = trio.CapacityLimiter(parallel)

    async def one(c: LeanWebSocket | Client) -> None:
        async with limiter:
            if isinstance(c, Client):
                await c.ws.aclose(reading=c.reading)
            else:
                await c.aclose()

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for c in connections:
                nursery.start_soon(one, c)


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one measured phase saw."""

    messages: int = 0
    deliveries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds else 0.0

    def server_us_per(self, count: int) -> float:
        """Server CPU microseconds per delivery (or round trip): independent of the client."""
        return 1e6 * self.server_cpu_seconds / count if count else float("nan")

    def per_server_cpu_second(self, count: int) -> float:
        return count / self.server_cpu_seconds if self.server_cpu_seconds else float("nan")

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class CpuClock:
    """CPU seconds of the server and of this client process over a phase, as % of wall time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.me = psutil.Process()

    def __enter__(self) -> CpuClock:
        self.wall = time.perf_counter()
        self.server_cpu = self.server.cpu()
        mine = self.me.cpu_times()
        self.client_cpu = mine.user + mine.system
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        mine = self.me.cpu_times()
        self.server_seconds = self.server.cpu() - self.server_cpu
        self.server_pct = 100 * self.server_seconds / wall
        self.client_seconds = mine.user + mine.system - self.client_cpu
        self.client_pct = 100 * self.client_seconds / wall


class BenchPayload(msgspec.Struct):
    s: int
    t: float


class BenchFrame(msgspec.Struct):
    payload: BenchPayload


_decode_bench = msgspec.json.Decoder(BenchFrame).decode


def bench_body(seq: int, padding: str) -> str:
    """A room message; the relay forwards it unchanged, so receivers read their own timestamp."""
    return f'{{"type":"bench","payload":{{"s":{seq},"t":{time.perf_counter()!r},"p":"{padding}"}}}}'


async def room_traffic(
    server: Server,
    senders: Sequence[Client],
    receivers: Sequence[Client],
    per_message: int,
    count: int,
    window: int,
    size: int,
    timeout: float,
) -> Phase:
    """Send ``count`` messages round-robin from ``senders``, at most ``window`` not yet seen by
    all ``per_message`` receivers; record each delivery's latency."""
    phase = Phase()
    remaining = [per_message] * count
    in_flight = trio.Semaphore(window)
    finished = trio.Event()
    padding = "x" * max(0, size - 60)
    last = [0.0]
    speak = server.speak
    prefix, start_at, end_at = speak.bench_prefix, speak.body_start, speak.body_end

    def sink(frame: bytes, now: float) -> None:
        if not frame.startswith(prefix):
            return
        payload = _decode_bench(frame[start_at:end_at]).payload
        phase.latencies.append(now - payload.t)
        phase.deliveries += 1
        left = remaining[payload.s] = remaining[payload.s] - 1
        if left == 0:
            phase.messages += 1
            last[0] = now
            in_flight.release()
            if phase.messages == count:
                finished.set()
        elif left < 0:
            phase.errors.append(f"message {payload.s} delivered too often")

    for client in receivers:
        client.sink = sink
    with CpuClock(server) as cpu:
        start = time.perf_counter()
        with trio.move_on_after(timeout) as scope:
            for seq in range(count):
                await in_flight.acquire()
                sender = senders[seq % len(senders)]
                await sender.ws.send(speak.room_message(bench_body(seq, padding)))
            await finished.wait()
    if scope.cancelled_caught:
        phase.errors.append(f"timed out after {timeout}s: {phase.messages}/{count} complete")
    phase.seconds = (last[0] or time.perf_counter()) - start
    phase.server_cpu, phase.client_cpu = cpu.server_pct, cpu.client_pct
    phase.server_cpu_seconds = cpu.server_seconds
    phase.client_cpu_seconds = cpu.client_seconds
    for client in receivers:
        client.sink = lambda frame, now: None
        if client.closed:
            phase.errors.append(f"{client.name} closed: {client.closed}")
    return phase


async def round_trips(server: Server, count: int, timeout: float) -> Phase:
    """Request → reply on one connection, one at a time."""
    phase = Phase()
    ws = await server.speak.open_echo()
    for n in range(20):  # warm-up
        await ws.send(server.speak.echo_request(n))
        await ws.get_message()
    with CpuClock(server) as cpu, trio.move_on_after(timeout) as scope:
        start = time.perf_counter()
        for n in range(count):
            sent = time.perf_counter()
            await ws.send(server.speak.echo_request(n))
            await ws.get_message()
            phase.latencies.append(time.perf_counter() - sent)
            phase.messages += 1
    phase.seconds = time.perf_counter() - start
    if scope.cancelled_caught:
        phase.errors.append(f"timed out after {timeout}s: {phase.messages}/{count}")
    await ws.aclose()
    phase.server_cpu, phase.client_cpu = cpu.server_pct, cpu.client_pct
    phase.server_cpu_seconds = cpu.server_seconds
    return phase


async def settle(server: Server, at_most: int, timeout: float = 20.0) -> None:
    """Wait (bounded) until the server holds at most ``at_most`` connections."""
    with trio.move_on_after(timeout):
        while server.established() > at_most:  # noqa: ASYNC110 - polling another process
            await trio.sleep(0.1)


async def quiesce(server: Server, timeout: float = 10.0) -> None:
    """Wait (bounded) until the server has finished earlier work: < 2% CPU over 0.25 s."""
    with trio.move_on_after(timeout):
        while True:
            before = server.cpu()
            await trio.sleep(0.25)
            if server.cpu() - before < 0.005:
                return


@dataclass
class IdleResult:
    connections: int
    rss_before: int
    rss_after: int
    connect_seconds: float

    @property
    def per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections if self.connections else 0.0


async def idle_memory(server: Server, count: int) -> IdleResult:
    """Server RSS before and after ``count`` members join one room and stay idle."""
    async with trio.open_nursery() as nursery:
        owner_ws, room = await server.speak.open_owner("idle")
        owner = Client(owner_ws, "idle owner")
        nursery.start_soon(owner.read)  # drains client_connected notes
        warm = await open_many(
            50, lambda i: server.speak.open_member(room, f"warm-{i}"), parallel=16
        )
        await close_all(warm)
        await settle(server, 1)
        await quiesce(server)
        before = server.rss()
        start = time.perf_counter()
        idle = await open_many(count, lambda i: server.speak.open_member(room, f"idle-{i}"))
        connect_seconds = time.perf_counter() - start
        await quiesce(server)
        after = server.rss()
        log(f"  {server.name}: {len(idle)} idle connections, RSS {before >> 10}→{after >> 10} KiB")
        await close_all([*idle, owner])
        nursery.cancel_scope.cancel()
    await settle(server, 0)
    return IdleResult(len(idle), before, after, connect_seconds)


@dataclass
class ServerResult:
    name: str
    idle: IdleResult
    round_trip: Phase
    broadcast: Phase
    broadcast_latency: Phase
    fanout: Phase
    fanout_latency: Phase
    peak_rss: int
    exit_code: int | None


async def measure(server: Server, opts: argparse.Namespace) -> ServerResult:
    """Every phase against one running server."""
    await wait_listening(server)
    log(f"{server.name}: pid {server.proc.pid}, port {server.port}")
    idle = await idle_memory(server, opts.idle)
    log(f"  {server.name}: {opts.round_trips} round trips")
    await quiesce(server)
    round_trip = await round_trips(server, opts.round_trips, opts.phase_timeout)
    async with trio.open_nursery() as nursery:
        owner_ws, room = await server.speak.open_owner("bench")
        owner = Client(owner_ws, "owner")
        nursery.start_soon(owner.read)
        opened = await open_many(opts.members, lambda i: server.speak.open_member(room, f"m{i}"))
        members = [Client(ws, f"member-{i}") for i, ws in enumerate(opened)]
        for member in members:
            nursery.start_soon(member.read)
        n = len(members)
        everyone = [owner, *members]

        async def traffic(senders: list[Client], count: int, window: int) -> Phase:
            return await room_traffic(
                server, senders, everyone, n, count, window, opts.size, opts.phase_timeout
            )

        await traffic([owner], 100, opts.window)  # warm-up
        await quiesce(server)
        log(f"  {server.name}: broadcast, {opts.messages} messages to {n} members")
        broadcast = await traffic([owner], opts.messages, opts.window)
        broadcast_latency = await traffic([owner], opts.latency_messages, 1)
        log(f"  {server.name}: fan-out, {opts.messages} messages from {n} members")
        await traffic(members, 100, opts.window)  # warm-up
        await quiesce(server)
        fanout = await traffic(members, opts.messages, opts.window)
        fanout_latency = await traffic(members, opts.latency_messages, 1)
        peak_rss = server.rss()
        await close_all(everyone)
        nursery.cancel_scope.cancel()
    await settle(server, 0, timeout=5.0)
    exit_code = await stop(server)
    return ServerResult(
        server.name,
        idle,
        round_trip,
        broadcast,
        broadcast_latency,
        fanout,
        fanout_latency,
        peak_rss,
        exit_code,
    )


# -- report ---------------------------------------------------------------------------------------


def figures(result: ServerResult) -> dict[str, Any]:
    """The machine-readable figures of one server."""
    r = result
    return {
        "broadcast_deliveries_per_s": r.broadcast.rate(r.broadcast.deliveries),
        "broadcast_messages_per_s": r.broadcast.rate(r.broadcast.messages),
        "broadcast_latency_p50_ms": r.broadcast.percentile(50),
        "broadcast_latency_p99_ms": r.broadcast.percentile(99),
        "broadcast_server_cpu_pct": r.broadcast.server_cpu,
        "broadcast_client_cpu_pct": r.broadcast.client_cpu,
        "broadcast_server_us_per_delivery": r.broadcast.server_us_per(r.broadcast.deliveries),
        "broadcast_deliveries_per_server_cpu_s": r.broadcast.per_server_cpu_second(
            r.broadcast.deliveries
        ),
        "broadcast_client_us_per_delivery": 1e6
        * r.broadcast.client_cpu_seconds
        / r.broadcast.deliveries
        if r.broadcast.deliveries
        else nan,
        "fanout_messages_per_s": r.fanout.rate(r.fanout.messages),
        "fanout_deliveries_per_s": r.fanout.rate(r.fanout.deliveries),
        "fanout_latency_p50_ms": r.fanout.percentile(50),
        "fanout_latency_p99_ms": r.fanout.percentile(99),
        "fanout_server_cpu_pct": r.fanout.server_cpu,
        "fanout_client_cpu_pct": r.fanout.client_cpu,
        "fanout_server_us_per_delivery": r.fanout.server_us_per(r.fanout.deliveries),
        "fanout_deliveries_per_server_cpu_s": r.fanout.per_server_cpu_second(r.fanout.deliveries),
        "fanout_client_us_per_delivery": 1e6 * r.fanout.client_cpu_seconds / r.fanout.deliveries
        if r.fanout.deliveries
        else nan,
        "broadcast_unloaded_latency_p50_ms": r.broadcast_latency.percentile(50),
        "broadcast_unloaded_latency_p99_ms": r.broadcast_latency.percentile(99),
        "fanout_unloaded_latency_p50_ms": r.fanout_latency.percentile(50),
        "fanout_unloaded_latency_p99_ms": r.fanout_latency.percentile(99),
        "round_trips_per_s": r.round_trip.rate(r.round_trip.messages),
        "round_trip_p50_ms": r.round_trip.percentile(50),
        "round_trip_p99_ms": r.round_trip.percentile(99),
        "round_trip_server_cpu_pct": r.round_trip.server_cpu,
        "round_trip_server_us": r.round_trip.server_us_per(r.round_trip.messages),
        "idle_connections": r.idle.connections,
        "idle_rss_before_kib": r.idle.rss_before / 1024,
        "idle_rss_after_kib": r.idle.rss_after / 1024,
        "rss_per_idle_connection_kib": r.idle.per_connection / 1024,
        "connects_per_s": r.idle.connections / r.idle.connect_seconds,
        "peak_rss_kib": r.peak_rss / 1024,
        "exit_code": r.exit_code,
        "errors": [
            *r.round_trip.errors,
            *r.broadcast.errors,
            *r.broadcast_latency.errors,
            *r.fanout.errors,
            *r.fanout_latency.errors,
        ],
    }


ROWS = [
    # (key, label, format)
    ("fanout_deliveries_per_server_cpu_s", "fan-out: deliveries per server CPU-second", ",.0f"),
    ("fanout_server_us_per_delivery", "fan-out: server CPU µs per delivery", ".1f"),
    ("fanout_deliveries_per_s", "fan-out: deliveries/s (member → owner + {m})", ",.0f"),
    ("fanout_messages_per_s", "fan-out: member messages/s", ",.0f"),
    ("fanout_latency_p50_ms", "fan-out: latency p50, ms ({w} in flight)", ".2f"),
    ("fanout_latency_p99_ms", "fan-out: latency p99, ms ({w} in flight)", ".2f"),
    ("fanout_server_cpu_pct", "fan-out: server CPU %", ".0f"),
    ("fanout_client_cpu_pct", "fan-out: generator CPU %", ".0f"),
    ("fanout_client_us_per_delivery", "fan-out: generator CPU µs per delivery", ".1f"),
    (
        "broadcast_deliveries_per_server_cpu_s",
        "broadcast: deliveries per server CPU-second",
        ",.0f",
    ),
    ("broadcast_server_us_per_delivery", "broadcast: server CPU µs per delivery", ".1f"),
    ("broadcast_deliveries_per_s", "broadcast: deliveries/s (owner → {n})", ",.0f"),
    ("broadcast_messages_per_s", "broadcast: owner messages/s", ",.0f"),
    ("broadcast_latency_p50_ms", "broadcast: latency p50, ms ({w} in flight)", ".2f"),
    ("broadcast_latency_p99_ms", "broadcast: latency p99, ms ({w} in flight)", ".2f"),
    ("broadcast_server_cpu_pct", "broadcast: server CPU %", ".0f"),
    ("broadcast_client_cpu_pct", "broadcast: generator CPU %", ".0f"),
    ("broadcast_client_us_per_delivery", "broadcast: generator CPU µs per delivery", ".1f"),
    ("broadcast_unloaded_latency_p50_ms", "broadcast one at a time: latency p50, ms", ".2f"),
    ("broadcast_unloaded_latency_p99_ms", "broadcast one at a time: latency p99, ms", ".2f"),
    ("fanout_unloaded_latency_p50_ms", "fan-out one at a time: latency p50, ms", ".2f"),
    ("fanout_unloaded_latency_p99_ms", "fan-out one at a time: latency p99, ms", ".2f"),
    ("round_trips_per_s", "round trips/s, one at a time (echo)", ",.0f"),
    ("round_trip_p50_ms", "round trip p50, ms", ".3f"),
    ("round_trip_p99_ms", "round trip p99, ms", ".3f"),
    ("round_trip_server_us", "round trip: server CPU µs each", ".1f"),
    ("connects_per_s", "connect + join handshakes/s (64 in parallel)", ",.0f"),
    ("rss_per_idle_connection_kib", "RSS per idle joined connection, KiB ({i})", ".1f"),
    ("idle_rss_before_kib", "RSS before idle connections, KiB", ",.0f"),
    ("peak_rss_kib", "RSS at end of load, KiB", ",.0f"),
    ("load_1min", "machine load average (1 min) when done", ".1f"),
]

SHORT = {
    "wstund": "wstund",
    "baseline": "baseline",
    "socket.io": "sio",
    "python-socketio": "py-sio",
}


def ratio_table(
    runs: list[dict[str, dict[str, Any]]],
    rows: Sequence[tuple[str, str, str]],
    short: dict[str, str],
    ours: str = "wstund",
) -> str:
    """One column per server, then ``ours`` ÷ each other server. With several runs a cell is the
    median ± half the spread (max − min) in % of it, and the ratios are of the medians."""
    names = list(runs[0])
    width = max(len(label) for _, label, _ in rows)
    cell = 15 if len(runs) == 1 else 20
    others = [n for n in names if n != ours] if ours in names else []
    head = f"{'':{width}}" + "".join(f"  {n:>{cell}}" for n in names)
    head += "".join(f"  {ours[0] + '÷' + short.get(n, n):>10}" for n in others)
    lines = [head, "-" * len(head)]

    def median(name: str, key: str) -> float:
        values = sorted(float(run[name][key]) for run in runs)
        return (
            values[len(values) // 2]
            if len(values) % 2
            else sum(values[len(values) // 2 - 1 : len(values) // 2 + 1]) / 2
        )

    for key, label, fmt in rows:
        row = f"{label:{width}}"
        for name in names:
            values = [float(run[name][key]) for run in runs]
            mid = median(name, key)
            if mid != mid:  # NaN: the figure does not apply
                text = "-"
            elif len(runs) == 1:
                text = f"{mid:{fmt}}"
            else:
                half = 50 * (max(values) - min(values)) / mid if mid else 0.0
                text = f"{mid:{fmt}} ±{half:.0f}%"
            row += f"  {text:>{cell}}"
        for other in others:
            a, b = median(ours, key), median(other, key)
            row += f"  {a / b:>10.2f}" if b and a == a and b == b else f"  {'-':>10}"
        lines.append(row)
    if others:
        lines.append(f"{ours[0]}÷X = {ours}'s figure divided by X's")
    if len(runs) > 1:
        lines.append(f"cells: median of {len(runs)} runs ± half the spread (max − min), in %")
    return "\n".join(lines)


def table(runs: list[dict[str, dict[str, Any]]], opts: argparse.Namespace) -> str:
    """The relay figures of every run, then their errors and unexpected exit codes."""
    rows = [
        (key, label.format(n=opts.members, m=opts.members - 1, w=opts.window, i=opts.idle), fmt)
        for key, label, fmt in ROWS
    ]
    lines = [ratio_table(runs, rows, SHORT)]
    lines.append("rates: higher is better for wstund; µs, latency, KiB: lower")
    for run in runs:
        for name, figs in run.items():
            for error in figs["errors"]:
                lines.append(f"{name} error: {error}")
            if figs["exit_code"] not in (0, -signal.SIGTERM):
                lines.append(f"{name} exited with {figs['exit_code']}")
    return "\n".join(lines)


def print_profile(path: str, limit: int = 30) -> None:
    log(f"\nwstund profile ({path}), top {limit} by own time:")
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


async def run(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """``opts.runs`` rounds, each measuring every server once (in turn, so that a noisy minute
    on the shared machine spreads over the servers instead of falling on one)."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wstund-bench-") as tmp:
        for round_ in range(opts.runs):
            results: dict[str, Any] = {}
            if opts.runs > 1:
                log(f"run {round_ + 1}/{opts.runs}")
            for name in opts.servers:
                server = STARTERS[name](Path(tmp), opts)
                try:
                    result = await measure(server, opts)
                finally:
                    if server.proc.poll() is None:
                        server.proc.kill()
                        server.proc.wait()
                results[result.name] = figures(result)
                results[result.name]["load_1min"] = os.getloadavg()[0]
            runs.append(results)
    return runs


def add_wstund_options(parser: argparse.ArgumentParser) -> None:
    """The flags choosing how wstund (and its agent) run, shared by the benches."""
    parser.add_argument(
        "--profile", metavar="FILE", help="run wstund under cProfile, write FILE, print the top"
    )
    parser.add_argument(
        "--wstund-src",
        metavar="DIR",
        help="run wstund (and the agent) from the source tree DIR, holding wstund/ and static/",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, measured in this order ({','.join(SERVERS)})",
    )
    parser.add_argument("--members", type=int, default=50, help="members in the room (50)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per load phase")
    parser.add_argument(
        "--latency-messages", type=int, default=200, help="messages sent one at a time (200)"
    )
    parser.add_argument("--window", type=int, default=16, help="messages in flight under load")
    parser.add_argument("--size", type=int, default=100, help="approximate frame size, bytes")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections (2000)")
    parser.add_argument("--round-trips", type=int, default=2000, help="round trips (2000)")
    parser.add_argument("--phase-timeout", type=float, default=30.0, help="bound per phase, s")
    parser.add_argument("--runs", type=int, default=1, help="rounds over every server (1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="don't pin server and generator CPUs"
    )
    add_wstund_options(parser)
    opts = parser.parse_args(argv)
    opts.servers = [name.strip() for name in opts.servers.split(",") if name.strip()]
    unknown = set(opts.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return opts


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    opts = parse_args()
    versions = []
    if "socket.io" in opts.servers:
        versions.append(ensure_socketio())
    if "python-socketio" in opts.servers:
        versions.append(ensure_python_socketio())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (opts.idle + opts.members) + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    opts.cpus = sorted(psutil.Process().cpu_affinity() or [])
    generator = client_cpus(opts)
    if generator:
        psutil.Process().cpu_affinity(generator)
    load_before = load_average()
    started = time.perf_counter()
    runs = trio.run(run, opts)
    elapsed = time.perf_counter() - started
    text = table(runs, opts)
    header = (
        f"wstund relay benchmark, {opts.runs} run(s): 1 owner + {opts.members} members, "
        f"{opts.messages} messages per load phase, {opts.window} in flight, ~{opts.size} B "
        f"frames, {opts.idle} idle connections; {os.cpu_count()} CPUs, servers pinned to "
        f"{server_cpus(opts)}, generator to {generator}; load average {load_before} before, "
        f"{load_average()} after; run took {elapsed:.0f}s"
    )
    if versions:
        header += "\npeers: " + "; ".join(versions)
    if opts.json:
        log(f"{header}\n{text}")
        out = {"options": vars(opts), "elapsed_s": elapsed, "versions": versions}
        out["load_average"] = [load_before, load_average()]
        print(json.dumps({**out, "runs": runs}, indent=2))
    else:
        print(f"{header}\n{text}")
    if opts.profile:
        print_profile(opts.profile)


if __name__ == "__main__":
    main()
