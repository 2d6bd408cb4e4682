"""The tunnel's server side against a real daemon: REST registry routes."""

from __future__ import annotations

import httpx
import trio

from .conftest import StartDaemon

ADMIN = {"X-Admin-Token": "adm"}


async def test_rest_add_list_rotate_remove(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"admin_token": "adm"})
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            refused = await client.post("/_api/tunnel/clients", json={"id": "laptop"})
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
            added = await client.post("/_api/tunnel/clients", json={"id": "laptop"}, headers=ADMIN)
            assert added.status_code == 201
            secret = added.json()["secret"]
            assert added.json()["id"] == "laptop" and len(secret) >= 32
            again = await client.post("/_api/tunnel/clients", json={"id": "laptop"}, headers=ADMIN)
            assert again.status_code == 409 and again.json()["error"] == "client_exists"
            for bad in ({"id": "Not.A.Label"}, {"name": "x"}):
                invalid = await client.post("/_api/tunnel/clients", json=bad, headers=ADMIN)
                assert invalid.status_code == 400, bad
            listed = (await client.get("/_api/tunnel/clients")).json()["clients"]
            assert [c["id"] for c in listed] == ["laptop"]
            assert listed[0]["connected"] is False and listed[0]["requests"] == 0
            assert "secret" not in listed[0] and "secret_hash" not in listed[0]
            rotated = await client.post("/_api/tunnel/clients/laptop/rotate", headers=ADMIN)
            assert rotated.status_code == 200 and rotated.json()["secret"] != secret
            assert daemon.hub.tunnels.registry.verify("laptop", rotated.json()["secret"])
            assert not daemon.hub.tunnels.registry.verify("laptop", secret)
            removed = await client.delete("/_api/tunnel/clients/laptop", headers=ADMIN)
            assert removed.status_code == 200
            gone = await client.delete("/_api/tunnel/clients/laptop", headers=ADMIN)
            assert gone.status_code == 404 and gone.json()["error"] == "client_not_found"
            missing = await client.post("/_api/tunnel/clients/nobody/rotate", headers=ADMIN)
            assert missing.status_code == 404
            assert (await client.get("/_api/tunnel/clients")).json() == {"clients": []}
