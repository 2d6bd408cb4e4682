"""The tunnel's server side against a real daemon: REST registry routes."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio_websocket

from wstund.tunnel import frames

from .conftest import RunningDaemon, StartDaemon

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


async def _register_as(daemon: RunningDaemon, client_id: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=daemon.url, headers=headers) as client:
        added = await client.post("/_api/tunnel/clients", json={"id": client_id})
        assert added.status_code == 201
        return str(added.json()["secret"])


def _agent_headers(client_id: str, secret: str) -> list[tuple[str, str]]:
    return [("X-Wstun-Client", client_id), ("Authorization", f"Bearer {secret}")]


async def test_agent_handshake_wrong_secret_and_duplicate(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(server={"token": "srv"})  # the agent needs no server token
    secret = await _register_as(daemon, "box", {"Authorization": "Bearer srv"})
    url = daemon.ws_url("/_tunnel/connect")
    with trio.fail_after(10):
        for bad in (_agent_headers("box", "wrong"), _agent_headers("nobody", secret), []):
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(url, extra_headers=bad):
                    pass
        async with trio_websocket.open_websocket_url(
            url, extra_headers=_agent_headers("box", secret)
        ) as agent:
            hello = frames.decode_control(str(await agent.get_message()))
            assert isinstance(hello, frames.Hello) and hello.client_id == "box"
            assert daemon.hub.tunnels.sessions["box"].client_id == "box"
            async with trio_websocket.open_websocket_url(
                daemon.ws_url("/_tunnel/connect", "client_id=box"),
                extra_headers=[("Authorization", f"Bearer {secret}")],
            ) as second:
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await second.get_message()
                assert closed.value.reason.code == 4009
            await agent.send_message(frames.encode_control(frames.Ping()))
            assert frames.decode_control(str(await agent.get_message())) == frames.Pong()
        while "box" in daemon.hub.tunnels.sessions:
            await trio.sleep(0.01)
