"""wstunctl moosicbox list|add|remove|rotate against a real daemon: the token it prints works on
the MoosicBox routes; rotating or removing a client cuts its sender and its old tokens."""

from __future__ import annotations

import httpx
import trio

from .conftest import RunningDaemon, StartDaemon
from .localapp import start_local_app
from .moosicbox_sender import connect_sender
from .test_ops_cli import admin, admin_json

CLIENT = "8c2f6a1e-1111-4222-8333-944455556666"


async def signature(daemon: RunningDaemon, token: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(5):
            return await http.post(
                f"{daemon.url}/auth/signature-token?clientId={CLIENT}",
                headers={"Authorization": f"Bearer {token}"},
            )


async def test_moosicbox_add_list_rotate_remove(
    nursery: trio.Nursery, start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon()
    added = await admin_json(daemon, "moosicbox", "add", CLIENT)
    token = added["token"]
    sig = (await signature(daemon, token)).json()["token"]
    local = await start_local_app(nursery)
    sender = await connect_sender(daemon, CLIENT, sig, local.url)
    listed = await admin_json(daemon, "moosicbox", "list")
    assert listed["clients"][0]["id"] == CLIENT
    assert listed["clients"][0]["connected"] is True
    assert listed["clients"][0]["signature_tokens"] == 1
    table = await admin(daemon, "moosicbox", "list")
    assert CLIENT in table.stdout
    duplicate = await admin(daemon, "moosicbox", "add", CLIENT)
    assert duplicate.exit_code == 1

    rotated = await admin(daemon, "moosicbox", "rotate", CLIENT)
    assert rotated.exit_code == 0 and "access token:" in rotated.stdout
    with trio.fail_after(5):
        while not sender.ws.closed:
            await trio.sleep(0.01)
    assert sender.ws.closed.code == 4003
    assert (await signature(daemon, token)).status_code == 401  # the old token is gone
    new_token = rotated.stdout.split("access token:")[1].split()[0]
    assert (await signature(daemon, new_token)).status_code == 200

    removed = await admin_json(daemon, "moosicbox", "remove", CLIENT)
    assert removed["removed"] is True
    assert (await signature(daemon, new_token)).status_code == 401
    assert (await admin_json(daemon, "moosicbox", "list"))["clients"] == []
    assert (await admin(daemon, "moosicbox", "remove", CLIENT)).exit_code == 1
