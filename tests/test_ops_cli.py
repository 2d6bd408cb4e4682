"""wstunctl against a real daemon over its admin socket (and over TCP with the admin token)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner, Result

from wstund import __version__
from wstund.admin.cli import duration
from wstund.admin.cli import main as wstunctl

from .conftest import (
    RunningDaemon,
    StartDaemon,
    create_room,
    expect_closed,
    join_room,
    recv,
    send,
)


async def ctl(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run wstunctl in a worker thread (it is a blocking client) with a bound on time."""
    runner = CliRunner()
    with trio.fail_after(20):
        return await trio.to_thread.run_sync(
            lambda: runner.invoke(wstunctl, list(args), env=env, catch_exceptions=False)
        )


async def admin(daemon: RunningDaemon, *args: str) -> Result:
    """wstunctl on ``daemon``'s admin socket."""
    return await ctl("--socket", str(daemon.daemon.admin_socket), *args)


async def admin_json(daemon: RunningDaemon, *args: str) -> Any:
    result = await admin(daemon, *args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


async def test_status_and_version_in_both_modes(wstund: RunningDaemon) -> None:
    human = await admin(wstund, "status")
    assert human.exit_code == 0, human.stderr
    assert "connections" in human.stdout and __version__ in human.stdout
    assert re.search(r"^uptime +\d+s$", human.stdout, re.M), human.stdout
    data = await admin_json(wstund, "status")
    assert data["version"] == __version__ and data["services"] == 2
    # --json before the subcommand works too
    early = await admin(wstund, "--json", "version")
    assert json.loads(early.stdout) == {"wstunctl": __version__, "wstund": __version__}
    version = await admin(wstund, "version")
    assert version.stdout.split() == ["wstunctl", __version__, "wstund", __version__]


async def test_services_commands(wstund: RunningDaemon) -> None:
    listing = await admin(wstund, "services", "list")
    assert listing.exit_code == 0
    header, *rows = listing.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "ENABLED", "VERSION"]
    assert [r.split()[0] for r in rows] == ["chat", "fileshare"]
    data = await admin_json(wstund, "services", "list")
    assert [s["name"] for s in data["services"]] == ["chat", "fileshare"]

    host, uuid = await create_room(wstund, "chat")
    shown = await admin_json(wstund, "services", "show", "chat")
    assert shown["instanceCount"] == 1 and shown["instances"][0]["uuid"] == uuid
    assert uuid in (await admin(wstund, "services", "show", "chat")).stdout

    disabled = await admin(wstund, "services", "disable", "chat")
    assert (disabled.exit_code, disabled.stdout.strip()) == (0, "disabled chat")
    assert wstund.hub.services.get("chat").enabled is False  # type: ignore[union-attr]
    assert (await recv(host))["type"] == "service_disabled"
    enabled = await admin_json(wstund, "services", "enable", "chat")
    assert enabled["success"] and enabled["service"]["enabled"] is True

    builtin = await admin(wstund, "services", "remove", "chat")
    assert builtin.exit_code == 1
    assert builtin.stderr.strip() == "error: built-in service 'chat' cannot be removed"
    unknown = await admin(wstund, "services", "show", "nope")
    assert unknown.exit_code == 1 and "no service named 'nope'" in unknown.stderr


async def test_instances_commands(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund, "chat", name="Lobby", token="t")
    member = await join_room(wstund, uuid, "bob", token="t", host=host)
    other_host, other = await create_room(wstund, "fileshare", name="Files")

    listing = await admin(wstund, "instances", "list")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["UUID", "SERVICE", "NAME"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [uuid, "chat", "Lobby"],
        [other, "fileshare", "Files"],
    ]
    only_chat = await admin_json(wstund, "instances", "list", "--service", "chat")
    assert [i["uuid"] for i in only_chat["instances"]] == [uuid]

    shown = await admin_json(wstund, "instances", "show", uuid)
    assert shown["members"] == ["bob"] and shown["userCount"] == 1 and shown["hasToken"]
    human = await admin(wstund, "instances", "show", uuid)
    assert "members: bob" in human.stdout
    missing = await admin(wstund, "instances", "show", "00000000")
    assert missing.exit_code == 1 and "00000000" in missing.stderr

    closed = await admin(wstund, "instances", "close", uuid)
    assert (closed.exit_code, closed.stdout.strip()) == (0, f"closed {uuid}")
    assert (await recv(member))["payload"] == {"uuid": uuid, "reason": "closed_by_admin"}
    assert await expect_closed(member) == 4004
    again = await admin(wstund, "--json", "instances", "close", uuid)
    assert again.exit_code == 1 and f"no instance '{uuid}'" in again.stderr
    assert [i["uuid"] for i in (await admin_json(wstund, "instances", "list"))["instances"]] == [
        other
    ]


async def test_clients_list_and_kick(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund, "chat")
    alice = await join_room(wstund, uuid, "alice", host=host)
    bob = await join_room(wstund, uuid, "bob", host=host)
    listing = await admin(wstund, "clients", "list")
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert rows == [["chat", "alice", uuid, "Room"], ["chat", "bob", uuid, "Room"]]
    data = await admin_json(wstund, "clients", "list", "chat")
    assert [c["userId"] for c in data["clients"]] == ["alice", "bob"]

    kicked = await admin(wstund, "clients", "kick", "chat", "bob", "--instance", uuid)
    assert (kicked.exit_code, kicked.stdout.strip()) == (0, f"kicked bob from {uuid}")
    assert (await recv(bob))["type"] == "kick"
    assert await expect_closed(bob) == 4003
    nobody = await admin(wstund, "clients", "kick", "chat", "bob")
    assert nobody.exit_code == 1 and "no user 'bob'" in nobody.stderr
    # alice is still seated and still talks to the host
    await send(alice, "chat_message", {"text": "still here"})
    while (message := await recv(host))["type"] != "chat_message":
        assert message["type"] == "client_disconnected"
    assert message["payload"] == {"text": "still here"}


async def test_reload_applies_and_refuses(start_daemon: StartDaemon, tmp_path: Path) -> None:
    running = await start_daemon()
    daemon = running.daemon
    config_file = tmp_path / "wstund.toml"
    daemon.config_path = config_file
    config_file.write_text(
        f'[server]\nstate_dir = "{tmp_path}"\ntoken = "fresh"\n'
        f'[admin]\nsocket = "{daemon.admin_socket}"\n[relay]\nmax_members_per_room = 7\n'
    )
    done = await admin(running, "reload")
    assert done.exit_code == 0, done.stderr
    assert "server.token" in done.stdout and "relay.max_members_per_room" in done.stdout
    assert "note: server.bind changed; restart wstund to apply it" in done.stdout
    assert running.hub.config.server.token == "fresh"
    assert running.hub.config.server.bind == ["127.0.0.1:0"]

    config_file.write_text("[relay]\nmax_members_per_room = 'lots'\n")
    refused = await admin(running, "reload")
    assert refused.exit_code == 1
    assert "relay.max_members_per_room: Expected `int`" in refused.stderr
    assert running.hub.config.relay.max_members_per_room == 7
    as_json = await admin(running, "reload", "--json")
    assert as_json.exit_code == 1 and as_json.stdout == ""


async def test_tcp_needs_the_admin_token(start_daemon: StartDaemon) -> None:
    running = await start_daemon(server={"admin_token": "adm"})
    refused = await ctl("--url", running.url, "services", "disable", "chat")
    assert refused.exit_code == 1
    assert "admin token" in refused.stderr and "WSTUN_ADMIN_TOKEN" in refused.stderr
    assert running.hub.services.get("chat").enabled  # type: ignore[union-attr]
    wrong = await ctl("--url", running.url, "--admin-token", "nope", "reload")
    assert wrong.exit_code == 1
    allowed = await ctl(
        "--url", running.url, "services", "disable", "chat", env={"WSTUN_ADMIN_TOKEN": "adm"}
    )
    assert allowed.exit_code == 0, allowed.stderr
    assert not running.hub.services.get("chat").enabled  # type: ignore[union-attr]
    # reads stay open on TCP (as the reference), the socket needs no token at all
    assert (await ctl("--url", running.url, "status")).exit_code == 0
    assert (await admin(running, "services", "enable", "chat")).exit_code == 0


async def test_unreachable_daemon_exits_3(tmp_path: Path) -> None:
    gone = await ctl("--socket", str(tmp_path / "none.sock"), "status")
    assert gone.exit_code == 3
    assert gone.stderr.startswith("error: cannot reach wstund at unix:")
    assert "--socket" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    with trio.socket.socket() as probe:  # a loopback port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = await ctl("--url", f"http://127.0.0.1:{port}", "--json", "instances", "list")
    assert refused.exit_code == 3
    version = await ctl("--socket", str(tmp_path / "none.sock"), "--json", "version")
    assert version.exit_code == 0
    assert json.loads(version.stdout) == {"wstunctl": __version__, "wstund": None}


async def test_usage_errors_exit_2(wstund: RunningDaemon) -> None:
    missing = await admin(wstund, "services", "show")
    assert missing.exit_code == 2 and "Missing argument 'NAME'" in missing.stderr
    bogus = await admin(wstund, "frobnicate")
    assert bogus.exit_code == 2 and "No such command 'frobnicate'" in bogus.stderr
    bad_option = await ctl("--timeout", "soon", "status")
    assert bad_option.exit_code == 2


async def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[relay]\nowner_grace = 3.0\n")
    ok = await ctl("config", "check", str(good))
    assert (ok.exit_code, ok.stdout.strip()) == (0, f"OK {good}")
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nowner_grace = -1\nbogus = 2\n")
    refused = await ctl("config", "check", str(bad))
    assert refused.exit_code == 1
    assert f"error: {bad}: relay.bogus: unknown key" in refused.stderr
    as_json = await ctl("--json", "config", "check", str(bad))
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["ok"] is False
    from_env = await ctl("config", "check", env={"WSTUND_CONFIG": str(good)})
    assert from_env.exit_code == 0 and str(good) in from_env.stdout
    missing = await ctl("config", "check", str(tmp_path / "missing.toml"))
    assert missing.exit_code == 1 and "config file not found" in missing.stderr


async def test_tunnel_run_is_the_agents_command_line() -> None:
    result = await ctl("tunnel", "run", "--help")
    assert result.exit_code == 0 and "Usage: wstunctl tunnel run" in result.stdout
    missing = await ctl("tunnel", "run", "--client-id", "x", "http://127.0.0.1:1")
    assert missing.exit_code == 2 and "Missing option '--server'" in missing.stderr


async def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("wstunctl")
    with trio.fail_after(20):
        done = await trio.run_process(
            [str(script), "--socket", str(tmp_path / "x.sock"), "status"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 3 and b"cannot reach wstund" in done.stderr


def test_durations_read_like_uptimes() -> None:
    assert [duration(s) for s in (0, 42.9, 307, 7500, 3 * 86400 + 4 * 3600 + 300, None)] == [
        "0s",
        "42s",
        "5m 07s",
        "2h 05m",
        "3d 4h 05m",
        "-",
    ]
