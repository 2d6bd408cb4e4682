"""wstund as a separate process (the real ``main``), for start-up, lock and disk-full tests.

``launch`` starts it (optionally inside a user + mount namespace whose state directory is a
tmpfs of a given size or read-only, so the kernel itself refuses the writes), ``wait_listening``
reads its port from the log, ``stop`` ends it by pid.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MAIN = [sys.executable, "-c", "from wstund.daemon import main; main()"]
START_GUARD = 30.0  # seconds; a hang guard only


@dataclass
class SubDaemon:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self) -> int:
        """The public port, once the daemon logs that it listens (fails if it exits first)."""
        deadline = time.monotonic() + START_GUARD
        while time.monotonic() < deadline:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.text())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise AssertionError(f"wstund exited {self.process.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"wstund did not start:\n{self.text()}")

    def wait_exit(self) -> int:
        return self.process.wait(timeout=START_GUARD)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=START_GUARD)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=START_GUARD)


# The admin token every daemon written by ``write_config`` has: management needs one.
ADMIN_TOKEN = "subdaemon-admin-token"


def write_config(path: Path, state: Path, admin_socket: Path, extra: str = "") -> Path:
    path.write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\nstate_dir = "{state}"\nshutdown_grace = 1.0\n'
        f'admin_token = "{ADMIN_TOKEN}"\n'
        f'[admin]\nsocket = "{admin_socket}"\n{extra}'
    )
    return path


def launch(
    tmp: Path,
    config: Path,
    *args: str,
    tmpfs: tuple[Path, str] | None = None,
    name: str = "wstund",
) -> SubDaemon:
    """Start ``wstund --config config *args``; with ``tmpfs=(dir, options)`` the daemon runs in
    its own user and mount namespace with a fresh tmpfs mounted on ``dir`` (e.g. ``size=256k``
    or ``ro``). The namespace dies with the daemon."""
    command = [*MAIN, "--config", str(config), *args]
    if tmpfs is not None:
        where, options = tmpfs
        where.mkdir(parents=True, exist_ok=True)
        script = (
            f"mount -t tmpfs -o {shlex.quote(options)} wstund-test {shlex.quote(str(where))}"
            f" && exec {shlex.join(command)}"
        )
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    log = tmp / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    return SubDaemon(process, log)
