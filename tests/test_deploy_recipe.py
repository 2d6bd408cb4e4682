"""The README's deployment recipe, run: its wstund.toml and its Caddyfile as written there.

Changed for a machine without a domain or the internet: the ports (free loopback ones, and
Caddy binds loopback only), the ACME CA (Caddy's internal one, ``local_certs``) and the name
lookups (the test connects to 127.0.0.1 and sends the recipe's names as SNI and Host).
"""

from __future__ import annotations

import re
import ssl
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from .caddy import free_port, run_caddyfile
from .conftest import StartDaemon, recv, send
from .localapp import start_local_app
from .test_tunnel_e2e import agent_for, register, run_agent

README = Path(__file__).parent.parent / "README.md"
RECIPE_PORT = "127.0.0.1:8080"
MAIN = "wstun.example.com"
TUNNEL_HOST = "home.t.example.com"


def recipe(name: str) -> str:
    """The fenced block that follows ``<!-- deploy:NAME -->`` in the README."""
    found = re.search(
        rf"<!-- deploy:{re.escape(name)} -->\s*```\w*\n(.*?)```", README.read_text(), re.S
    )
    assert found, f"README has no deploy:{name} block"
    return found.group(1)


def local_caddyfile(text: str, upstream: int, http_port: int, https_port: int) -> str:
    """The recipe's Caddyfile with test ports, loopback binds and Caddy's internal CA."""
    assert text.startswith("{\n") and RECIPE_PORT in text
    test_options = (
        f"{{\n\thttp_port {http_port}\n\thttps_port {https_port}\n\tdefault_bind 127.0.0.1\n"
        "\tlocal_certs\n\tskip_install_trust\n\tadmin off\n"
    )
    return test_options + text[2:].replace(RECIPE_PORT, f"127.0.0.1:{upstream}")


def trusting(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


async def wait_for(path: Path) -> None:
    with trio.fail_after(15):
        while not await trio.Path(path).exists():
            await trio.sleep(0.05)


async def as_host(
    context: ssl.SSLContext, host: str, method: str, url: str, *, retry: bool = False, **kw: Any
) -> httpx.Response:
    """One request on a connection of its own from 127.0.0.2, with ``host`` as SNI and Host
    (a pooled connection would keep the SNI of the host it was opened for). With ``retry``,
    wait until Caddy serves the certificate it has just written."""
    transport = httpx.AsyncHTTPTransport(verify=context, local_address="127.0.0.2")
    headers = {"Host": host, **kw.pop("headers", {})}
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        while True:
            try:
                return await http.request(
                    method, url, headers=headers, extensions={"sni_hostname": host}, **kw
                )
            except httpx.ConnectError:
                if not retry:
                    raise
                await trio.sleep(0.05)


async def test_the_readme_recipe_serves_https_websockets_and_a_host_per_client(
    nursery: trio.Nursery, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    settings: dict[str, Any] = tomllib.loads(recipe("wstund.toml"))
    assert settings["server"].pop("bind") == [RECIPE_PORT]
    daemon = await start_daemon(**settings)
    local = await start_local_app(nursery)
    secret = await register(daemon, "home")
    await run_agent(nursery, agent_for(daemon, secret, local, "home"))
    http_port, https_port = free_port(), free_port()
    caddyfile = local_caddyfile(recipe("Caddyfile"), daemon.port, http_port, https_port)
    workdir = tmp_path / "caddy"
    async with run_caddyfile(caddyfile, workdir, https_port):
        data = workdir / "data" / "caddy"
        await wait_for(data / "certificates" / "local" / MAIN / f"{MAIN}.crt")  # got at start
        context = trusting(data / "pki" / "authorities" / "local" / "root.crt")
        https = f"https://127.0.0.1:{https_port}"
        with trio.fail_after(30):
            main = await as_host(context, MAIN, "GET", f"{https}/libwstun.js", retry=True)
            echoed = await as_host(
                context,
                TUNNEL_HOST,
                "POST",
                f"{https}/echo",
                content=b"over https",
                headers={"X-Forwarded-For": "6.6.6.6"},
            )
            with pytest.raises(httpx.ConnectError):  # tls-ask said no: no certificate
                await as_host(context, "nobody.t.example.com", "GET", f"{https}/")
            redirect = await as_host(context, MAIN, "GET", f"http://127.0.0.1:{http_port}/")
        assert main.status_code == 200 and "WSTun" in main.text
        assert echoed.status_code == 201 and echoed.content == b"over https"
        assert echoed.headers["x-saw-x-forwarded-for"] == "127.0.0.2"
        assert echoed.headers["x-saw-x-forwarded-proto"] == "https"
        assert echoed.headers["x-saw-x-forwarded-host"] == TUNNEL_HOST
        assert redirect.status_code == 308
        assert redirect.headers["location"].startswith(f"https://{MAIN}")
        # A relay WebSocket over TLS through Caddy, counted under the client's own address.
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.2", 0))
        with trio.fail_after(10):
            await sock.connect(("127.0.0.1", https_port))
            stream = trio.SSLStream(trio.SocketStream(sock), context, server_hostname=MAIN)
            ws = await trio_websocket.wrap_client_stream(nursery, stream, MAIN, "/ws")
            await send(ws, "list_instances", service="chat", msg_id="l")
            assert (await recv(ws))["type"] == "instance_list"
            assert dict(daemon.hub.connections_by_address) == {"127.0.0.2": 1}
            await ws.aclose()
