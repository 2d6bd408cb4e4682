"""Pages and static files over plain HTTP: cache policy, ETags, sniffing and path fencing."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import httpx

from .conftest import RunningDaemon, StartDaemon

BUILTIN_PAGES = ("/chat/service", "/chat/main", "/fileshare/service", "/fileshare/main")


async def test_libwstun_is_public_and_cacheable(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        served = await client.get("/libwstun.js")
        assert served.status_code == 200
        assert served.headers["Content-Type"].startswith("text/javascript")
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        directives = {d.strip() for d in served.headers["Cache-Control"].split(",")}
        assert directives == {"public", "max-age=3600"}
        # Expires says the same hour as max-age, not Quart's default 12 h.
        lifetime = parsedate_to_datetime(served.headers["Expires"]) - parsedate_to_datetime(
            served.headers["Date"]
        )
        assert 3590 <= lifetime.total_seconds() <= 3610
        etag = served.headers["ETag"]

        again = await client.get("/libwstun.js", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        other = await client.get("/libwstun.js", headers={"If-None-Match": '"other"'})
        assert other.status_code == 200 and other.content == served.content


async def test_pages_are_revalidated_every_time(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        for path in ("/", "/chat/service", "/chat/main", "/fileshare/main"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert page.headers["Content-Type"].startswith("text/html"), path
            assert page.headers["Cache-Control"] == "no-cache", path
            assert "Expires" not in page.headers, path
            assert page.headers["X-Content-Type-Options"] == "nosniff", path
            unchanged = await client.get(path, headers={"If-None-Match": page.headers["ETag"]})
            assert unchanged.status_code == 304, path


async def test_service_root_serves_only_pages_and_assets(wstund: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        for path in ("/chat/../admin.html", "/chat/.hidden.js", "/chat/main.html", "/nope/main"):
            refused = await client.get(path)
            assert refused.status_code == 404, path
            assert refused.json()["error"] == "not_found", path
        posted = await client.post("/chat/main")
        assert (posted.status_code, posted.json()["error"]) == (405, "method_not_allowed")


async def test_page_subresources_load_without_the_server_token(start_daemon: StartDaemon) -> None:
    # A page fetched with ?token= loads its scripts and styles without one: every file it names
    # must be a public asset, or the page breaks only on servers that set a token.
    daemon = await start_daemon(server={"token": "srv"})
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        for page_path in BUILTIN_PAGES:
            page = await client.get(page_path, params={"token": "srv"})
            assert page.status_code == 200, page_path
            names = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(/[^"]+)"', page.text)
            assert "/libwstun.js" in names and "/static/rooms.js" in names, (page_path, names)
            assert "/static/pages.css" in names, (page_path, names)
            for name in names:
                asset = await client.get(name)
                assert asset.status_code == 200, (page_path, name)
                assert asset.headers["X-Content-Type-Options"] == "nosniff", name
        for path in ("/static/rooms.html", "/static/../admin.html", "/static/missing.js"):
            refused = await client.get(path, params={"token": "srv"})
            assert refused.status_code == 404, path
