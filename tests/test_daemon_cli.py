"""The wstund command: --check-config, defaults without a config file, the state-dir fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wstund import config as config_module
from wstund.config import Config, state_dir

WSTUND = [sys.executable, "-c", "from wstund.daemon import main; main()"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WSTUND, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def test_check_config_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[relay]\nowner_grace = 3.0\n")
    result = _run("--config", str(good), "--check-config")
    assert result.returncode == 0 and result.stdout.strip() == "OK"
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nowner_grace = 'soon'\nnope = 1\n")
    result = _run("--config", str(bad), "--check-config")
    assert result.returncode == 1
    assert "relay." in result.stderr and "error:" in result.stderr
    missing = _run("--config", str(tmp_path / "missing.toml"), "--check-config")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_no_config_file_means_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WSTUND_CONFIG"}
    if Path("/etc/wstun/wstund.toml").exists():
        pytest.skip("a real /etc/wstun/wstund.toml exists on this machine")
    result = _run("--check-config", env=env)
    assert result.returncode == 0 and result.stdout.strip() == "OK"
    assert Config().server.bind == ["127.0.0.1:8080"]


def test_state_dir_falls_back_to_a_user_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(config_module, "SYSTEM_STATE_DIR", blocker / "wstun")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(Config()) == tmp_path / "xdg" / "wstun"


def test_check_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[relay]\nowner_grac = 3\nmax_message_size = 'big'\nheartbeat_interval = -1\n"
        "[log]\nlevel = 'loud'\n[sever]\nbind = 1\n"
    )
    result = _run("--config", str(bad), "--check-config")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        "error: relay.owner_grac: unknown key (did you mean relay.owner_grace?)",
        "error: relay.max_message_size: Expected `int`, got `str`",
        "error: log.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'",
        "error: sever: unknown key (did you mean server?)",
        "error: relay.heartbeat_interval: expected a number >= 0, got -1.0",
    ]


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.toml"
    bad.write_text("[relay]\nowner_grace = 3\nmax_message_size = = 4\n")
    result = _run("--config", str(bad), "--check-config")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: invalid TOML in {bad}: ")
    assert "line 3" in result.stderr
