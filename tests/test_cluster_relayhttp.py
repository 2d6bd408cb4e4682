"""HTTP through the relay across nodes: a fileshare download or a program's request reaching a
node without the answering peer's socket is answered by the node that holds it, streamed."""

from __future__ import annotations

import hashlib
import json

import httpx
import trio

from tests.fileowner import FileOwner, pattern_source

from .conftest import StartNodes, connect, create_room, join_room, recv, send

MiB = 1024 * 1024


def _sha(size: int) -> str:
    return hashlib.sha256(pattern_source()(0, size)).hexdigest()


async def _download(url: str) -> tuple[httpx.Response, str, int]:
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(60):
            async with http.stream("GET", url) as response:
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
    return response, digest.hexdigest(), size


async def test_download_through_a_node_without_the_owner(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b, c = await start_nodes(3)
    host, uuid = await create_room(a, "fileshare", "Files")
    alice = await join_room(a, uuid, "alice", service="fileshare", host=host)
    size = 5 * MiB + 17
    nursery.start_soon(FileOwner(alice, {"f1": (size, pattern_source())}).run)

    response, digest, got = await _download(f"{b.url}/fileshare/download/alice/f1?instance={uuid}")
    assert response.status_code == 200
    assert got == size and digest == _sha(size)
    assert response.headers["content-disposition"].startswith("attachment")
    policies = response.headers.get_list("content-security-policy")
    assert "sandbox" in policies and all(p.split()[0] == "sandbox" for p in policies)

    # A member whose socket is on c, of the room held on a: a download through a reaches it.
    bob = await join_room(c, uuid, "bob", service="fileshare", host=host)
    nursery.start_soon(FileOwner(bob, {"g": (MiB, pattern_source())}).run)
    response, digest, got = await _download(f"{a.url}/fileshare/download/bob/g")
    assert response.status_code == 200 and digest == _sha(MiB)

    # Nobody anywhere: this node's own answer.
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.get(f"{b.url}/fileshare/download/carol/f1")
    assert missing.status_code == 503 and missing.json()["error"] == "owner_offline"


async def test_program_request_through_a_node_without_the_program(
    start_nodes: StartNodes, nursery: trio.Nursery
) -> None:
    a, b = await start_nodes(2)
    program = await connect(a)
    await send(program, "register", {"name": "echo"}, msg_id="r")
    assert (await recv(program))["payload"]["success"] is True

    async def answer() -> None:
        request = (await recv(program))["payload"]
        reply = {
            "request_id": request["request_id"],
            "status": 201,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(
                {
                    "path": request["path"],
                    "query": request["query"],
                    "got": request.get("body"),
                    "headers": sorted(name.lower() for name in request["headers"]),
                }
            ),
        }
        await send(program, "http_response", reply)

    with trio.fail_after(20):
        async with trio.open_nursery() as inner:
            inner.start_soon(answer)
            async with httpx.AsyncClient() as http:
                response = await http.post(f"{b.url}/echo/a/b?x=1", content=b"hello")
    assert response.status_code == 201
    seen = response.json()
    assert (seen["path"], seen["query"], seen["got"]) == ("/echo/a/b", "x=1", "hello")
    assert not [name for name in seen["headers"] if name.startswith("x-wstund")]
    assert "sandbox" in response.headers["content-security-policy"]

    # No program of that name anywhere: 404 as on one node.
    async with httpx.AsyncClient(timeout=10) as http:
        gone = await http.get(f"{b.url}/nothing-here/x")
        forged = await http.get(
            f"{b.url}/fileshare/download/alice/f1", headers={"x-wstund-cluster": "guessed-secret"}
        )
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert forged.status_code == 403 and forged.json()["error"] == "forbidden"
