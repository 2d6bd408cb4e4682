"""One wstund per state directory and per admin socket: an ``fcntl`` lock held for the process.

A second daemon with the same paths would share the first one's SQLite file and replace its
admin socket (Hypercorn removes an existing socket file before binding), leaving the first one
unmanageable. The lock files hold the owner's pid, for the refusal message; the kernel drops
the lock when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .config import ConfigError

LOCK_NAME = "wstund.lock"


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return f"pid {int(os.read(fd, 32).decode().strip())}"
    return "another process"


def _take(path: Path, what: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError([f"{what}: cannot create lock file {path}: {exc.strerror}"]) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise ConfigError(
            [f"{what}: already in use by another wstund ({holder}, lock {path}); stop it first"]
        ) from None
    with contextlib.suppress(OSError):  # the pid is a courtesy; a full disk must not stop us
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def hold(state_dir: Path, admin_socket: Path) -> Iterator[None]:
    """Lock the state directory and the admin socket for the enclosed run (ConfigError if
    another wstund holds either)."""
    fds: list[int] = []
    try:
        fds.append(_take(state_dir / LOCK_NAME, "server.state_dir"))
        fds.append(_take(admin_socket.with_name(admin_socket.name + ".lock"), "admin.socket"))
        yield
    finally:
        for fd in fds:
            os.close(fd)
