"""MoosicBox tokens at rest: only SHA-256 hashes in the registry, signature tokens valid 14 days,
and at most ``max_tokens_per_client`` of each kind per client."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import httpx
import trio

from wstund.tunnel.registry import DB_NAME

from .conftest import StartDaemon
from .moosicbox_sender import ADMIN, register

CLIENT = "c0ffee00-0000-4000-8000-000000000001"


async def validate(base: str, signature: str) -> int:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(5):
            r = await http.post(
                f"{base}/auth/validate-signature-token?clientId={CLIENT}&signature={signature}"
            )
    return r.status_code


async def test_tokens_hashed_expiring_and_capped(start_daemon: StartDaemon, tmp_path: Path) -> None:
    daemon = await start_daemon(
        server={"admin_token": ADMIN}, moosicbox={"max_tokens_per_client": 2}
    )
    access, first = await register(daemon, CLIENT)
    _, second = await register(daemon, CLIENT)
    db = sqlite3.connect(tmp_path / DB_NAME)
    stored = {row[0] for row in db.execute("SELECT token_hash FROM moosicbox_tokens")}
    assert hashlib.sha256(access.encode()).hexdigest() in stored
    assert not {access, first, second} & stored  # no token itself is kept
    assert await validate(daemon.url, first) == 200
    _, third = await register(daemon, CLIENT)  # a third signature: the oldest goes
    assert await validate(daemon.url, first) == 401
    assert await validate(daemon.url, second) == 200 and await validate(daemon.url, third) == 200
    expires = db.execute(
        "SELECT expires - created_at FROM moosicbox_tokens WHERE token_hash = ?",
        (hashlib.sha256(third.encode()).hexdigest(),),
    ).fetchone()[0]
    assert expires == 14 * 24 * 3600
    with db:
        db.execute(
            "UPDATE moosicbox_tokens SET expires = ? WHERE kind = 'signature'", (time.time() - 1,)
        )
    assert await validate(daemon.url, third) == 401  # expired
    db.close()
