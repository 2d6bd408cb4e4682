"""wstunctl tunnel list|add|remove|rotate|run against a real daemon, and a graceful stop that lets
an in-flight tunnel download finish."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import httpx
import trio

from wstund.agent import Agent, AgentConfig

from .conftest import RunningDaemon, StartDaemon
from .localapp import pattern_sha256, start_local_app
from .test_ops_cli import admin, admin_json
from .test_ops_daemon import admin_client, samples


async def add_client(daemon: RunningDaemon, client_id: str) -> str:
    result = await admin(daemon, "tunnel", "add", client_id, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    secret: str = json.loads(result.stdout)["secret"]
    return secret


async def test_tunnel_add_list_rotate_remove(wstund: RunningDaemon) -> None:
    secret = await add_client(wstund, "laptop")
    human = await admin(wstund, "tunnel", "add", "desk")
    assert human.exit_code == 0 and "secret:" in human.stdout
    listed = await admin_json(wstund, "tunnel", "list")
    ids = sorted(c["id"] for c in listed["clients"])
    assert ids == ["desk", "laptop"]
    table = await admin(wstund, "tunnel", "list")
    assert "laptop" in table.stdout and "desk" in table.stdout
    rotated = await admin_json(wstund, "tunnel", "rotate", "laptop")
    assert rotated["secret"] and rotated["secret"] != secret
    rotated_again = await admin(wstund, "tunnel", "rotate", "laptop")
    assert rotated_again.exit_code == 0 and "secret:" in rotated_again.stdout
    duplicate = await admin(wstund, "tunnel", "add", "laptop")
    assert duplicate.exit_code == 1
    removed = await admin(wstund, "tunnel", "remove", "desk")
    assert removed.exit_code == 0 and "desk" in removed.stdout
    await add_client(wstund, "spare")
    assert (await admin_json(wstund, "tunnel", "remove", "spare"))["removed"] is True
    listed = await admin_json(wstund, "tunnel", "list")
    assert [c["id"] for c in listed["clients"]] == ["laptop"]
    gone = await admin(wstund, "tunnel", "rotate", "desk")
    assert gone.exit_code == 1


async def test_tunnel_run_is_the_agent(
    nursery: trio.Nursery, wstund: RunningDaemon, tmp_path: Path
) -> None:
    """`wstunctl tunnel run` serves requests (a subprocess) and exits 1 on a wrong secret."""
    secret = await add_client(wstund, "cli")
    local = await start_local_app(nursery)
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    wstunctl = str(Path(sys.executable).with_name("wstunctl"))
    cmd = [wstunctl, "tunnel", "run", "--server", wstund.url, "--client-id", "cli"]
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    with trio.fail_after(20):
        refused = await trio.run_process(
            [*cmd, "--secret-file", str(wrong), local.url], capture_stderr=True, check=False
        )
        assert refused.returncode == 1
        assert b"refused" in refused.stderr
        async with trio.open_nursery() as n:
            run = functools.partial(
                trio.run_process, [*cmd, "--secret-file", str(secret_file), local.url], check=False
            )
            proc = await n.start(run)
            async with httpx.AsyncClient(timeout=5) as http:
                while True:
                    r = await http.post(f"{wstund.url}/_t/cli/echo", content=b"via wstunctl")
                    if r.status_code == 201:
                        break
                    assert r.status_code == 503  # agent not connected yet
                    await trio.sleep(0.05)
            assert r.content == b"via wstunctl"
            proc.terminate()


async def test_graceful_stop_lets_a_tunnel_download_finish(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon(server={"shutdown_grace": 20})
    secret = await add_client(daemon, "drain")
    local = await start_local_app(nursery)
    agent = Agent(
        AgentConfig(server=daemon.url, client_id="drain", secret=secret, target=local.url)
    )
    nursery.start_soon(agent.run)
    n = 20 * 1024 * 1024
    digest = hashlib.sha256()
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(30):
            await agent.wait_sessions(1)
            async with http.stream("GET", f"{daemon.url}/_t/drain/bytes?n={n}") as response:
                stopped = False
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    if not stopped:
                        daemon.daemon.stop()  # what SIGTERM does
                        stopped = True
                        await trio.sleep(0.2)
    assert digest.hexdigest() == pattern_sha256(n)


async def test_metrics_count_tunnel_requests_by_status(
    nursery: trio.Nursery, wstund: RunningDaemon
) -> None:
    secret = await add_client(wstund, "metered")
    local = await start_local_app(nursery)
    agent = Agent(
        AgentConfig(server=wstund.url, client_id="metered", secret=secret, target=local.url)
    )
    nursery.start_soon(agent.run)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            await agent.wait_sessions(1)
            for path in ("/echo", "/echo", "/nowhere"):
                await http.get(f"{wstund.url}/_t/metered{path}")
            async with admin_client(wstund) as admin_http:
                text = (await admin_http.get("/metrics")).text
    found = samples(text)
    assert found[("wstund_tunnel_requests_total", (("status", "201"),))] == 2
    assert found[("wstund_tunnel_requests_total", (("status", "404"),))] == 1
    assert found[("wstund_tunnel_request_seconds_count", ())] == 3
