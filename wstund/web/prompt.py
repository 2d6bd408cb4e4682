"""The small HTML login page a browser gets at ``/admin`` without the admin token.

Its script takes the token from the URL fragment (``/admin#admin_token=…``, the URL the daemon
logs) or from the form, posts it as JSON to ``/admin/login`` (which answers with an HttpOnly
cookie), drops the fragment from the address bar and history, and opens ``/admin``.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>wstund admin: log in</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; background: #f4f6f8; margin: 0; }
form { max-width: 380px; margin: 12vh auto; background: #fff; padding: 20px 24px;
       border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.1); }
input { width: 100%; box-sizing: border-box; padding: 7px; margin: 8px 0 12px; }
.error { color: #a42020; } code { font-size: 13px; }
</style></head>
<body><form id="token-form">
<h1>wstund admin</h1>
<p id="message">MESSAGE</p>
<label for="admin_token">Admin token</label>
<input id="admin_token" name="admin_token" type="password" autocomplete="current-password"
 autofocus required>
<button type="submit">Log in</button>
<p>The server printed the login URL when it first started;
<code>wstunctl admin token</code> prints it again.</p>
</form>
<script>
"use strict";
const message = document.getElementById("message");
async function login(token) {
  const response = await fetch("/admin/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }), credentials: "same-origin",
  });
  if (response.ok) { location.replace("/admin"); return; }
  message.textContent = "That token was not accepted.";
  message.className = "error";
}
function fromFragment() {
  const token = new URLSearchParams(location.hash.slice(1)).get("admin_token");
  if (token === null) return;
  history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  login(token);
}
fromFragment();
addEventListener("hashchange", fromFragment);  // the login URL opened over this very page
document.getElementById("token-form").addEventListener("submit", ev => {
  ev.preventDefault();
  login(document.getElementById("admin_token").value);
});
</script>
</body></html>
"""
NOT_ACCEPTED = '<span class="error">That token was not accepted.</span>'
ASK = "This page needs the server's admin token."


def login_page(*, tried: bool) -> str:
    """The login page's HTML; ``tried`` says a token was given and refused."""
    return PAGE.replace("MESSAGE", NOT_ACCEPTED if tried else ASK)
