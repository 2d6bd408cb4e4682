"""HTTP through the relay (DESIGN 3.3) over real sockets: downloads, backpressure, failures."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, connect, create_room, join_room, recv, send
from tests.fileowner import FileOwner, pattern_source

MiB = 1024 * 1024


async def fileshare_member(
    daemon: RunningDaemon, user_id: str = "alice"
) -> tuple[Any, Any, str]:
    host, uuid = await create_room(daemon, "fileshare", "Files")
    member = await join_room(daemon, uuid, user_id, service="fileshare", host=host)
    return host, member, uuid


def expected_sha(size: int) -> str:
    return hashlib.sha256(pattern_source()(0, size)).hexdigest()


async def settle(read: Any, rounds: int = 100) -> None:
    """Wait (bounded) until ``read()`` stops changing: the sender is stalled."""
    previous = -1
    for _ in range(rounds):
        current = read()
        if current == previous:
            return
        previous = current
        await trio.sleep(0.3)
    raise AssertionError("the transfer never settled")


async def wait_until(check: Any, rounds: int = 100) -> None:
    for _ in range(rounds):
        if check():
            return
        await trio.sleep(0.05)
    raise AssertionError("condition never became true")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64"])
async def test_download_streams_file_through_relay(wstund: RunningDaemon, binary: bool) -> None:
    host, member, uuid = await fileshare_member(wstund)
    size = 3 * MiB + 123
    owner = FileOwner(member, {"f1": (size, pattern_source())}, binary=binary)
    wstund.nursery.start_soon(owner.run)
    url = f"{wstund.url}/fileshare/download/alice/f1?instance={uuid}"
    with trio.fail_after(30):
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == expected_sha(size)
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["content-security-policy"] == "sandbox"
    assert wstund.hub.http_relay.exchanges == {}
    assert wstund.hub.http_relay.buffered == 0
    # The answers were engine traffic: the host's next message is the member's next room message.
    await send(member, "chat_message", {"text": "after"})
    assert (await recv(host))["type"] == "chat_message"


async def test_unknown_owner_is_503_and_missing_file_is_502(wstund: RunningDaemon) -> None:
    host, member, uuid = await fileshare_member(wstund)
    owner = FileOwner(member, {})
    wstund.nursery.start_soon(owner.run)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            offline = await client.get(f"{wstund.url}/fileshare/download/nobody/f1")
            missing = await client.get(f"{wstund.url}/fileshare/download/alice/nope")
    assert offline.status_code == 503 and offline.json()["error"] == "owner_offline"
    assert missing.status_code == 502 and "no such file" in missing.json()["message"]
    assert wstund.hub.http_relay.exchanges == {}


async def test_no_response_head_is_504(start_daemon: Any) -> None:
    daemon = await start_daemon(http_relay={"start_timeout": 0.3})
    host, member, uuid = await fileshare_member(daemon)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{daemon.url}/fileshare/download/alice/f1")
        request = await recv(member)
        assert request["type"] == "file_request"
        rid = request["payload"]["requestId"]
        assert await recv(member) == {
            "type": "http_abort",
            "payload": {"request_id": rid, "reason": "timeout"},
        }
    assert response.status_code == 504 and response.json()["error"] == "owner_timeout"
    assert daemon.hub.http_relay.exchanges == {}


@pytest.mark.parametrize("binary", [True, False], ids=["window", "legacy-base64-no-window"])
async def test_slow_reader_keeps_server_memory_bounded(start_daemon: Any, binary: bool) -> None:
    window, channel, chunk = 512 * 1024, 8, 64 * 1024
    daemon = await start_daemon(http_relay={"window": window, "channel_size": channel})
    host, member, uuid = await fileshare_member(daemon)
    size = 96 * MiB
    owner = FileOwner(
        member,
        {"big": (size, pattern_source())},
        binary=binary,
        honour_window=binary,
        chunk_size=chunk,
    )
    daemon.nursery.start_soon(owner.run)
    relay = daemon.hub.http_relay
    digest = hashlib.sha256()
    received = 0
    with trio.fail_after(120):
        async with httpx.AsyncClient() as client:
            url = f"{daemon.url}/fileshare/download/alice/big"
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                chunks = response.aiter_raw()
                first = await chunks.__anext__()
                digest.update(first)
                received += len(first)
                # The caller stops reading: the owner must stall long before the end.
                await settle(lambda: sum(t.sent for t in owner.transfers.values()))
                stalled_at = sum(t.sent for t in owner.transfers.values())
                assert stalled_at < size // 2, stalled_at
                assert relay.peak_buffered <= max(window, channel * chunk) + chunk
                async for data in chunks:
                    digest.update(data)
                    received += len(data)
    assert received == size
    assert digest.hexdigest() == expected_sha(size)
    assert relay.peak_buffered <= max(window, channel * chunk) + chunk
    assert relay.exchanges == {} and relay.buffered == 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64"])
async def test_owner_disconnect_mid_download_truncates(wstund: RunningDaemon, binary: bool) -> None:
    host, member, uuid = await fileshare_member(wstund)
    size = 16 * MiB
    owner = FileOwner(
        member, {"f": (size, pattern_source())}, binary=binary, stop_after=512 * 1024
    )
    wstund.nursery.start_soon(owner.run)
    received = 0
    with trio.fail_after(30):
        async with httpx.AsyncClient() as client:
            url = f"{wstund.url}/fileshare/download/alice/f"
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                await owner.stalled.wait()
                await member.aclose()
                with pytest.raises(httpx.RemoteProtocolError):
                    async for data in response.aiter_raw():
                        received += len(data)
    assert received < size
    await wait_until(lambda: not wstund.hub.http_relay.exchanges)
    assert wstund.hub.http_relay.buffered == 0


async def test_downloader_leaving_aborts_the_owner(wstund: RunningDaemon) -> None:
    host, member, uuid = await fileshare_member(wstund)
    owner = FileOwner(member, {"f": (64 * MiB, pattern_source())})
    wstund.nursery.start_soon(owner.run)
    with trio.fail_after(30):
        async with httpx.AsyncClient() as client:
            url = f"{wstund.url}/fileshare/download/alice/f"
            async with client.stream("GET", url) as response:
                await response.aiter_raw().__anext__()
        await wait_until(lambda: bool(owner.aborts))
    assert owner.aborts == list(owner.transfers)
    transfer = next(iter(owner.transfers.values()))
    assert not transfer.done and transfer.sent < 64 * MiB
    await wait_until(lambda: not wstund.hub.http_relay.exchanges)


async def test_registered_program_answers_http(wstund: RunningDaemon) -> None:
    program = await connect(wstund)
    await send(program, "register", {"name": "admin"}, msg_id="r0")
    refused = await recv(program)
    assert refused["payload"]["success"] is False
    assert refused["payload"]["code"] == "invalid_name"
    await send(program, "register", {"name": "echo", "description": "echo"}, msg_id="r1")
    ack = await recv(program)
    assert ack == {
        "type": "ack",
        "id": "r1",
        "payload": {"success": True, "message": "registered /echo/", "name": "echo"},
    }
    other = await connect(wstund)
    await send(other, "register", {"name": "echo"}, msg_id="r2")
    assert (await recv(other))["payload"]["code"] == "name_taken"

    async def answer() -> None:
        request = await recv(program)
        assert request["type"] == "http_request"
        body = request["payload"]
        reply = {
            "request_id": body["request_id"],
            "status": 201,
            "headers": {"Content-Type": "application/json", "Connection": "x"},
            "body": json.dumps(
                {"method": body["method"], "path": body["path"], "query": body["query"],
                 "got": body.get("body")}
            ),
        }
        await send(program, "http_response", reply)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{wstund.url}/echo/a/b?x=1", content=b"hello")
    assert response.status_code == 201
    assert response.json() == {"method": "POST", "path": "/echo/a/b", "query": "x=1", "got": "hello"}
    assert "sandbox" in response.headers["content-security-policy"]
    assert "connection" not in response.headers or response.headers["connection"] != "x"
    await program.aclose()
    await wait_until(lambda: "echo" not in wstund.hub.http_relay.programs)
    async with httpx.AsyncClient() as client:
        gone = await client.get(f"{wstund.url}/echo/a")
    assert gone.status_code == 404


async def test_clients_cannot_spoof_server_messages_and_room_bytes_still_flow(
    wstund: RunningDaemon,
) -> None:
    host, member, uuid = await fileshare_member(wstund)
    bob = await join_room(wstund, uuid, "bob", service="fileshare", host=host)
    await send(member, "file_request", {"requestId": "x", "fileId": "y"}, msg_id="s")
    error = await recv(member)
    assert error["type"] == "error" and error["payload"]["code"] == "unknown_type"
    # A binary frame that looks like a chunk but names no request of this peer is room bytes.
    frame = b"\x01\x03abc" + b"payload"
    await member.send_message(frame)
    assert await recv(bob) == frame
    await send(member, "http_response_start", {"request_id": "nope"}, msg_id="t")
    assert (await recv(member))["payload"]["code"] == "unknown_request"
