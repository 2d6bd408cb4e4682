"""The admin token a first start makes, so management is never open by default.

When ``server.admin_token`` (or ``admin_token_file``) is not set, the token lives in
``{state_dir}/admin.token`` (mode 0600), made once from a CSPRNG and read at every start and
reload. ``wstunctl admin token`` prints it again over the admin socket.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Config

TOKEN_FILE = "admin.token"
LOGIN_FRAGMENT = "#admin_token="


def token_path(state: Path) -> Path:
    """Where a generated admin token is kept."""
    return state / TOKEN_FILE


def load_or_create(state: Path) -> tuple[str, bool]:
    """The stored admin token, making it (0600, never over an existing file) on first use;
    ``(token, True)`` when it was made just now."""
    path = token_path(state)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token, False
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask; an old empty file too
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    return token, True


def apply(config: Config, state: Path) -> bool:
    """Give ``config`` the stored admin token when it sets none; True when one was just made."""
    if config.server.admin_token:
        return False
    config.server.admin_token, created = load_or_create(state)
    return created


def login_url(base: str, token: str, admin_host: str = "") -> str:
    """The ``/admin`` URL that logs a browser in: the token in the fragment, which browsers
    never send to a server, and which the page trades for a cookie and then removes. With
    ``admin_host`` (``admin.host``) the URL names that host, keeping ``base``'s scheme and port
    unless ``admin_host`` has its own."""
    if admin_host:
        parts = urlsplit(base)
        port = f":{parts.port}" if parts.port and ":" not in admin_host.rsplit("]", 1)[-1] else ""
        base = f"{parts.scheme or 'http'}://{admin_host}{port}"
    return f"{base.rstrip('/')}/admin{LOGIN_FRAGMENT}{token}"
