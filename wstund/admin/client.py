"""wstunctl's HTTP client: the admin unix socket, or a URL with the admin token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from ..config import DEFAULT_CONFIG_PATH, SYSTEM_RUNTIME_DIR, ConfigError, load

UNREACHABLE = 3


class CtlError(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_socket() -> Path:
    """The admin socket the local daemon uses: its config's admin.socket, or a runtime path."""
    config_path = Path(os.environ.get("WSTUND_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        if config_path.is_file():
            configured = load(config_path).admin.socket
            if configured:
                return Path(configured)
    except (ConfigError, OSError):
        pass
    candidates = [SYSTEM_RUNTIME_DIR / "admin.sock"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "wstun" / "admin.sock")
    candidates.append(Path(f"/tmp/wstun-{os.getuid()}") / "wstun" / "admin.sock")
    return next((path for path in candidates if path.exists()), candidates[0])


class AdminClient:
    """Synchronous calls to the management API; errors become CtlError with an exit code."""

    def __init__(
        self,
        *,
        socket: Path | None = None,
        url: str | None = None,
        admin_token: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {}
        if admin_token:
            headers["X-Admin-Token"] = admin_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if url:
            self.where = url
            transport = httpx.HTTPTransport()
            base_url = url.rstrip("/")
        else:
            path = socket or default_socket()
            self.where = f"unix:{path}"
            transport = httpx.HTTPTransport(uds=str(path))
            base_url = "http://wstund"
        self._http = httpx.Client(
            transport=transport, base_url=base_url, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; returns the decoded JSON body of a 2xx answer."""
        try:
            response = self._http.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, FileNotFoundError) as exc:
            raise CtlError(
                f"cannot reach wstund at {self.where} ({exc}); is it running "
                "(systemctl status wstund)? Or pass --socket PATH / --url URL",
                UNREACHABLE,
            ) from None
        except httpx.TransportError as exc:
            raise CtlError(f"wstund at {self.where} did not answer: {exc}", UNREACHABLE) from None
        return self._decode(response)

    def text(self, path: str) -> str:
        """GET a text resource (``/metrics``)."""
        try:
            response = self._http.get(path)
        except httpx.TransportError as exc:
            raise CtlError(f"cannot reach wstund at {self.where} ({exc})", UNREACHABLE) from None
        if response.status_code >= 400:
            self._decode(response)
        return response.text

    def _decode(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 400:
            return body
        message = body.get("message") if isinstance(body, dict) else None
        message = message or f"HTTP {response.status_code} {response.reason_phrase}"
        if response.status_code in (401, 403):
            message += (
                " — pass --admin-token (or set WSTUN_ADMIN_TOKEN), or use the admin socket as "
                "root or a member of group wstun"
            )
        elif response.status_code in (404, 405) and (
            not isinstance(body, dict) or body.get("error") in ("not_found", "method_not_allowed")
        ):
            message = (
                f"wstund at {self.where} does not serve {response.request.method} "
                f"{response.request.url.path}; it may be older than wstunctl (wstunctl version)"
            )
        raise CtlError(message)
