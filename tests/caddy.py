"""A real Caddy (Debian's ``caddy`` package) in front of a daemon, for tests.

Started with a generated Caddyfile (``PLAIN_PROXY``: plain HTTP on a free loopback port, no
admin endpoint), its state under the test's directory, and stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

PLAIN_PROXY = """\
{{
\tadmin off
\tauto_https off
}}
:{port} {{
\tbind 127.0.0.1
\treverse_proxy 127.0.0.1:{upstream}
}}
"""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int, proc: trio.Process, log: Path) -> None:
    with trio.move_on_after(15):
        while proc.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return
    proc.kill()
    pytest.fail(f"caddy did not listen on {port}:\n{_read(log)}")


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _write_caddyfile(workdir: Path, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    caddyfile = workdir / "Caddyfile"
    caddyfile.write_text(text)
    return caddyfile


@asynccontextmanager
async def run_caddy(upstream: int, workdir: Path) -> AsyncIterator[int]:
    """Caddy on 127.0.0.1:<port> proxying every host to 127.0.0.1:``upstream``; yields port."""
    port = free_port()
    async with run_caddyfile(PLAIN_PROXY.format(port=port, upstream=upstream), workdir, port):
        yield port


@asynccontextmanager
async def run_caddyfile(text: str, workdir: Path, port: int) -> AsyncIterator[None]:
    """Caddy running the Caddyfile ``text`` until the block ends; ready once ``port`` listens."""
    binary = shutil.which("caddy")
    if binary is None:
        pytest.fail("Debian caddy is not installed (scripts/test.sh installs it)")
    caddyfile = _write_caddyfile(workdir, text)
    log = workdir / "caddy.log"
    env = {
        **os.environ,
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        await _wait_listening(port, proc, log)
        yield
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
