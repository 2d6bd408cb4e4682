"""Management is never open, never in a URL, never writable by a page that is not ours.

The admin token a first start makes, the login that trades it for a cookie, the checks on
management writes (non-simple, same origin), the headers of /admin and of untrusted content,
service workers refused, and the marketplace's fetch limits, over real HTTP.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import stat
from pathlib import Path

import httpx
import pytest
import trio

from wstund.admin.token import login_url, token_path
from wstund.httpheaders import UNTRUSTED_SANDBOX, untrusted_response_headers
from wstund.marketplace.fetch import is_public_address

from .conftest import RunningDaemon, StartDaemon, connect, create_room, join_room, recv, send
from .evilsite import start_evil_site
from .marketplace_server import start_marketplace
from .test_ops_cli import admin
from .test_ops_systemd import notify_socket, start_wstund
from .test_security_browser import add_tunnel

EVIL = "http://evil.example"


def cookie_jar(daemon: RunningDaemon) -> dict[str, str]:
    """The cookie a logged-in browser sends."""
    return {"Cookie": f"wstun_admin={daemon.admin_token}"}


async def test_first_start_makes_a_0600_token_logs_its_url_once_and_wstunctl_prints_it(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstund")
    daemon = await start_daemon()
    token = daemon.admin_token
    path = token_path(daemon.hub.state_dir)
    assert len(token) >= 32 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    logged = [r.getMessage() for r in caplog.records if token in r.getMessage()]
    assert logged == [f"admin page (log in once with this URL): {daemon.admin_login_url}"]
    printed = await admin(daemon, "admin", "token")
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout.split() == [token, "log", "in", "at:", daemon.admin_login_url]
    # A restart keeps the token and does not log it again.
    caplog.clear()
    again = await start_daemon()
    assert again.admin_token == token
    assert not [r for r in caplog.records if token in r.getMessage()]
    # Nothing works without it: no open management by default.
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        refused = await client.post("/_api/tunnel/clients", json={"id": "x"})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        listing = await client.get("/_api/tunnel/clients")
        assert listing.status_code == 403


async def test_a_configured_admin_token_makes_no_file_and_guards_the_client_list(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(server={"admin_token": "adm", "token": "srv"})
    assert daemon.admin_token == "adm"
    assert not token_path(daemon.hub.state_dir).exists()
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        path = "/_api/tunnel/clients"
        server_only = await client.get(path, headers={"Authorization": "Bearer srv"})
        assert (server_only.status_code, server_only.json()["error"]) == (403, "forbidden")
        assert (await client.get(path, headers={"Authorization": "Bearer adm"})).status_code == 200
    printed = await admin(daemon, "--json", "admin", "token")
    assert printed.exit_code == 0, printed.stderr
    assert json.loads(printed.stdout)["token"] == "adm"


async def test_login_trades_the_token_for_a_cookie_and_a_clean_url(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        by_query = await client.get(f"/admin?admin_token={wstund.admin_token}")
        assert by_query.status_code == 303 and by_query.headers["Location"] == "/admin"
        cookies = by_query.headers.get_list("Set-Cookie")
        assert len(cookies) == 2
        for cookie, path in zip(sorted(cookies), ("/_api", "/admin"), strict=True):
            assert cookie.startswith(f"wstun_admin={wstund.admin_token};"), cookie
            assert f"Path={path}" in cookie and "HttpOnly" in cookie, cookie
            assert "SameSite=Strict" in cookie, cookie
        wrong = await client.get("/admin?admin_token=nope", headers={"Accept": "text/html"})
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        assert "Set-Cookie" not in wrong.headers
        login = "/admin/login"
        refused = await client.post(login, json={"token": "nope"})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        form = await client.post(login, data={"token": wstund.admin_token})
        assert form.status_code == 415 and form.json()["error"] == "unsupported_media_type"
        ok = await client.post(login, json={"token": wstund.admin_token})
        assert ok.status_code == 204 and len(ok.headers.get_list("Set-Cookie")) == 2
        page = await client.get("/admin", headers=cookie_jar(wstund))
        assert page.status_code == 200 and "<h1>wstund admin" in page.text
        assert wstund.admin_token not in page.text
        out = await client.post("/admin/logout", headers={"X-Requested-With": "x"})
        assert out.status_code == 204
        assert all("Max-Age=0" in c for c in out.headers.get_list("Set-Cookie"))


async def test_admin_page_headers(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        for headers in (cookie_jar(wstund), {"Accept": "text/html"}):  # the page, the login
            page = await client.get("/admin", headers=headers)
            csp = page.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
            nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
            assert f'<script nonce="{nonce}">' in page.text and "<script>" not in page.text
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert page.headers["X-Frame-Options"] == "DENY"
            assert page.headers["Cache-Control"] == "no-store"


async def test_management_writes_must_be_non_simple_and_same_origin(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(server={"allowed_origins": ["https://ops.example"]})
    jar = cookie_jar(daemon)
    own = {"Origin": daemon.url}
    async with httpx.AsyncClient(base_url=daemon.url, headers=jar) as client:
        path = "/_api/tunnel/clients"
        body = json.dumps({"id": "a"})
        for headers, status, error in [
            ({"Content-Type": "text/plain", **own}, 415, "unsupported_media_type"),
            ({"Content-Type": "application/x-www-form-urlencoded", **own}, 415, None),
            ({"Content-Type": "multipart/form-data; boundary=x", **own}, 415, None),
            ({**own}, 415, "unsupported_media_type"),
            ({"Content-Type": "application/json", "Origin": EVIL}, 403, "origin_not_allowed"),
            ({"Content-Type": "application/json", "Origin": "null"}, 403, "origin_not_allowed"),
            ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403, None),
            ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, None),
        ]:
            refused = await client.post(path, content=body, headers=headers)
            assert refused.status_code == status, (headers, refused.text)
            assert refused.json()["error"] == (error or refused.json()["error"])
        assert daemon.hub.tunnels.registry.all() == []
        for name, headers in [
            ("a", {"Content-Type": "application/json", **own}),
            ("b", {"Content-Type": "application/json; charset=utf-8", "Sec-Fetch-Site": "none"}),
            ("c", {"Content-Type": "application/json", "Origin": "https://ops.example"}),
        ]:
            body = json.dumps({"id": name})
            added = await client.post(path, content=body, headers=headers)
            assert added.status_code == 201, (headers, added.text)
        # Without a body, a header no page can add without a preflight.
        bare = await client.post("/_api/services/chat/disable", headers=own)
        assert bare.status_code == 415
        assert daemon.hub.services.get("chat").enabled  # type: ignore[union-attr]
        custom = await client.post(
            "/_api/services/chat/disable", headers={"X-Requested-With": "x", **own}
        )
        assert custom.status_code == 200
        # A token in a header is no ambient credential: scripts (wstunctl) need nothing more.
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as tool:
        assert (await tool.post("/_api/services/chat/enable")).status_code == 200
        # The token is never taken from the query string.
        anonymous = httpx.AsyncClient(base_url=daemon.url)
        async with anonymous:
            query = await anonymous.post(
                f"/_api/services/chat/disable?admin_token={daemon.admin_token}"
            )
        assert query.status_code == 403


async def answer_once(member: object, status: int, headers: dict[str, str], body: bytes) -> None:
    """A fileshare member answering one file request."""
    message = await recv(member)  # type: ignore[arg-type]
    assert message["type"] == "file_request", message
    rid = message["payload"]["requestId"]
    await send(
        member, "http_response_start", {"request_id": rid, "status": status, "headers": headers}
    )  # type: ignore[arg-type]
    chunk = {"request_id": rid, "chunk_base64": base64.b64encode(body).decode(), "done": True}
    await send(member, "http_response_chunk", chunk)  # type: ignore[arg-type]


async def test_untrusted_responses_of_any_status_are_sandboxed(
    wstund: RunningDaemon, nursery: trio.Nursery
) -> None:
    host, uuid = await create_room(wstund, "fileshare", "Files")
    member = await join_room(wstund, uuid, "mallory", service="fileshare", host=host)
    headers = {"Content-Type": "text/html", "Service-Worker-Allowed": "/"}
    async with httpx.AsyncClient(base_url=wstund.url, timeout=10) as client:
        for status in (404, 500, 302):
            async with trio.open_nursery() as answering:
                answering.start_soon(answer_once, member, status, headers, b"<script>1</script>")
                got = await client.get("/fileshare/download/mallory/page")
            assert got.status_code == status
            assert got.headers["Content-Security-Policy"] == UNTRUSTED_SANDBOX
            assert got.headers["X-Content-Type-Options"] == "nosniff"
            assert "Service-Worker-Allowed" not in got.headers
        # A tunnel that is not there: wstund's own JSON error, sandboxed all the same.
        missing = await client.get("/_t/nobody/page")
        assert missing.headers["Content-Security-Policy"] == UNTRUSTED_SANDBOX
        # wstund's own pages are not sandboxed.
        assert "Content-Security-Policy" not in (await client.get("/chat/main")).headers


async def test_service_worker_scripts_are_refused(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        for path in ("/libwstun.js", "/_t/evil/sw.js", "/fileshare/download/m/sw.js", "/x/sw"):
            refused = await client.get(path, headers={"Service-Worker": "script"})
            assert refused.status_code == 403, path
            assert refused.json()["error"] == "service_worker_refused"
        assert (await client.get("/libwstun.js")).status_code == 200


def test_untrusted_headers_always_add_our_sandbox_and_drop_worker_scope() -> None:
    given = [
        (b"Content-Type", b"text/html"),
        (b"Service-Worker-Allowed", b"/"),
        (b"X-Content-Type-Options", b"whatever"),
        (b"Content-Security-Policy", b"default-src https://sandbox.example"),
    ]
    assert untrusted_response_headers(given) == [
        (b"Content-Type", b"text/html"),
        (b"Content-Security-Policy", b"default-src https://sandbox.example"),
        (b"content-security-policy", UNTRUSTED_SANDBOX.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    # A response's own sandbox never replaces ours: both are enforced, the strictest wins.
    for own in (b"sandbox", b"sandbox allow-same-origin allow-scripts"):
        assert untrusted_response_headers([(b"content-security-policy", own)]) == [
            (b"content-security-policy", own),
            (b"content-security-policy", UNTRUSTED_SANDBOX.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("fe80::1%eth0", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("0.0.0.0", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_marketplace_fetches_only_known_public_origins(
    start_daemon: StartDaemon, nursery: trio.Nursery, tmp_path: Path
) -> None:
    market = await start_marketplace(nursery, tmp_path / "market")
    other = await start_marketplace(nursery, tmp_path / "other")
    other.publish("echo", "1", {"main.html": b"<p>elsewhere</p>"})
    market.publish("echo", "1", {"main.html": b"<p>here</p>"})
    market.redirect["service/echo.json"] = f"{other.url}/service/echo.json"
    daemon = await start_daemon(marketplace={"urls": [market.url]})
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.admin_headers) as client:
        # A configured marketplace on loopback is the operator's choice; its redirect to
        # another origin is refused.
        moved = await client.post("/_api/marketplace/install", json={"name": "echo"})
        assert (moved.status_code, moved.json()["error"]) == (502, "redirect_refused")
        assert daemon.hub.services.get("echo") is None
        # An address the operator did not configure: loopback, link-local, private.
        for url in (other.url, "http://169.254.169.254", "http://10.0.0.1:8080"):
            refused = await client.post("/_api/marketplace/url", json={"url": url})
            assert (refused.status_code, refused.json()["error"]) == (400, "address_refused")
        # A URL that is not a known marketplace is never fetched.
        for route in ("install", "list"):
            unknown = await client.post(
                f"/_api/marketplace/{route}", json={"name": "echo", "url": other.url}
            )
            assert (unknown.status_code, unknown.json()["error"]) == (400, "unknown_marketplace")
        assert (await client.get("/_api/marketplace/url")).json() == {"urls": [market.url]}


async def test_reload_keeps_the_made_token_and_a_deleted_one_is_replaced(
    start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = await start_daemon()
    config_file = tmp_path / "wstund.toml"
    config_file.write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\nstate_dir = "{tmp_path}"\n'
        f'[admin]\nsocket = "{daemon.daemon.admin_socket}"\n'
    )
    first = daemon.admin_token
    assert daemon.daemon.reload(config_file).errors == []
    assert daemon.admin_token == first  # a config without admin_token keeps the made one
    token_path(daemon.hub.state_dir).unlink()  # rotation: delete the file, reload
    caplog.set_level(logging.INFO, logger="wstund")
    assert daemon.daemon.reload(config_file).errors == []
    second = daemon.admin_token
    assert second != first and token_path(daemon.hub.state_dir).read_text().strip() == second
    assert any(daemon.admin_login_url in r.getMessage() for r in caplog.records)
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        path = "/_api/tunnel/clients"
        assert (await client.get(path, headers={"X-Admin-Token": first})).status_code == 403
        assert (await client.get(path, headers={"X-Admin-Token": second})).status_code == 200


@pytest.mark.parametrize(
    ("base", "host", "url"),
    [
        ("http://127.0.0.1:8080", "", "http://127.0.0.1:8080/admin#admin_token=T"),
        (
            "http://127.0.0.1:8080/",
            "admin.example",
            "http://admin.example:8080/admin#admin_token=T",
        ),
        ("https://w.example", "admin.example", "https://admin.example/admin#admin_token=T"),
        (
            "http://127.0.0.1:8080",
            "admin.example:9000",
            "http://admin.example:9000/admin#admin_token=T",
        ),
    ],
)
def test_login_url_names_the_admin_host(base: str, host: str, url: str) -> None:
    assert login_url(base, "T", host) == url


async def test_a_default_install_logs_its_admin_url_and_nothing_else_manages(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The real ``wstund`` program on its defaults, as a new user starts it."""
    async with notify_socket() as notify:
        proc, port, lines = await start_wstund(nursery, tmp_path, notify, watchdog_usec=None)
        try:
            token = (tmp_path / "admin.token").read_text().strip()
            url = f"http://127.0.0.1:{port}/admin#admin_token={token}"
            with trio.fail_after(10):  # logged right after "listening on"
                while not any("with this URL" in line for line in lines):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert [line for line in lines if token in line] == [
                next(line for line in lines if line.endswith(f"with this URL): {url}"))
            ]
            assert stat.S_IMODE((tmp_path / "admin.token").stat().st_mode) == 0o600
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                simple = await client.post(
                    "/_api/tunnel/clients",
                    content=b'{"id": "x"}',
                    headers={"Content-Type": "text/plain", "Origin": EVIL},
                )
                assert simple.status_code == 403
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()


async def test_admin_credentials_are_never_passed_on(
    wstund: RunningDaemon, nursery: trio.Nursery
) -> None:
    evil = await start_evil_site(nursery, wstund.url)
    await add_tunnel(nursery, wstund, evil)
    program = await connect(wstund)
    await send(program, "register", {"name": "prog"}, msg_id="r")
    assert (await recv(program))["payload"]["success"]
    token = wstund.admin_token
    sent = {"Cookie": f"a=1; wstun_admin={token}; b=2", "X-Admin-Token": token}
    async with httpx.AsyncClient(base_url=wstund.url, timeout=10) as client:
        tunnelled = await client.get("/_t/evil/echo", headers=sent)
        assert tunnelled.status_code == 200
        async with trio.open_nursery() as answering:

            async def answer() -> None:
                request = (await recv(program))["payload"]
                reply = {"request_id": request["request_id"], "status": 200, "headers": {}}
                await send(program, "http_response", {**reply, "body": json.dumps(request)})

            answering.start_soon(answer)
            relayed = await client.get("/prog/x", headers=sent)
    seen = [entry for entry in evil.loot if entry.startswith("/echo?")]
    assert len(seen) == 1 and token not in seen[0] and "cookie=a=1; b=2" in seen[0]
    assert token not in relayed.text
    headers = {k.lower(): v for k, v in relayed.json()["headers"].items()}
    assert headers["cookie"] == "a=1; b=2" and "x-admin-token" not in headers
