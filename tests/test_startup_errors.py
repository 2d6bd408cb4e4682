"""Start-up and operator errors end with one clear line and exit status 1, never a traceback;
a second wstund on the same state directory or admin socket is refused by a lock."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .subdaemon import SubDaemon, launch, write_config


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for admin sockets (unix socket paths are capped at 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="wstun-") as name:
        yield Path(name)


def one_error_line(daemon: SubDaemon, *expected: str) -> str:
    status = daemon.wait_exit()
    output = daemon.text()
    assert status == 1, output
    assert "Traceback" not in output and "ExceptionGroup" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    for text in expected:
        assert text in errors[0], output
    return errors[0]


def test_bind_without_a_port_is_one_line(tmp_path: Path, short_dir: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "state", short_dir / "a.sock")
    one_error_line(launch(tmp_path, config, "--bind", "8080"), "server.bind", "'8080'")


def test_port_in_use_is_one_line(tmp_path: Path, short_dir: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "state", short_dir / "a.sock")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = launch(tmp_path, config, "--bind", f"127.0.0.1:{port}")
        one_error_line(daemon, "server.bind", f"127.0.0.1:{port}", "in use")
    assert not (short_dir / "a.sock").exists()


def test_read_only_state_dir_is_one_line(tmp_path: Path, short_dir: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml", state, short_dir / "a.sock")
    daemon = launch(tmp_path, config, tmpfs=(state, "ro"))
    one_error_line(daemon, "server.state_dir", str(state))


def test_second_daemon_on_the_same_paths_is_refused_and_the_first_keeps_its_socket(
    tmp_path: Path, short_dir: Path
) -> None:
    admin = short_dir / "a.sock"
    config = write_config(tmp_path / "c.toml", tmp_path / "state", admin)
    first = launch(tmp_path, config, name="first")
    try:
        first.wait_listening()
        socket_inode = admin.stat().st_ino
        second = launch(tmp_path, config, name="second")
        one_error_line(second, "server.state_dir", f"pid {first.process.pid}")
        # Another state directory, the same admin socket: refused too.
        other = write_config(tmp_path / "o.toml", tmp_path / "other-state", admin)
        third = launch(tmp_path, other, name="third")
        one_error_line(third, "admin.socket", f"pid {first.process.pid}")
        assert admin.stat().st_ino == socket_inode
        transport = httpx.HTTPTransport(uds=str(admin))
        with httpx.Client(transport=transport, base_url="http://wstund", timeout=10) as client:
            assert client.get("/_api/status").status_code == 200
    finally:
        first.stop()
    assert first.process.returncode == 0, first.text()


def test_bind_option_with_a_token_file_starts(tmp_path: Path, short_dir: Path) -> None:
    """--bind checks the addresses only: the token file is read once, as without it."""
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        short_dir / "a.sock",
        f'[metrics]\ntoken_file = "{secret}"\n',
    )
    config.write_text(
        config.read_text().replace("[server]\n", f'[server]\ntoken_file = "{secret}"\n')
    )
    daemon = launch(tmp_path, config, "--bind", "127.0.0.1:0")
    try:
        port = daemon.wait_listening()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/_api/services",
            headers={"Authorization": "Bearer s3cret"},
            timeout=10,
        )
        assert answer.status_code == 200
    finally:
        daemon.stop()
