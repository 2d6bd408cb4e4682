"""HTTP through the relay over real sockets: downloads, backpressure, failures."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, connect, create_room, join_room, recv, send
from tests.fileowner import FileOwner, pattern_source
from wstund.relay import binframe

MiB = 1024 * 1024


async def fileshare_member(daemon: RunningDaemon, user_id: str = "alice") -> tuple[Any, Any, str]:
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
    assert response.headers.get_list("content-type") == ["application/octet-stream"]
    # the download's own strict "sandbox" stays beside the one every untrusted response gets
    assert "sandbox" in response.headers.get_list("content-security-policy")
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
    # The chunk queue alone could hold 4 MiB: the byte bound (window) is what must hold.
    window, channel, chunk = 512 * 1024, 64, 64 * 1024
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
                assert relay.peak_buffered <= window
                async for data in chunks:
                    digest.update(data)
                    received += len(data)
    assert received == size
    assert digest.hexdigest() == expected_sha(size)
    assert relay.peak_buffered <= window
    assert relay.exchanges == {} and relay.buffered == 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64"])
async def test_owner_disconnect_mid_download_truncates(wstund: RunningDaemon, binary: bool) -> None:
    host, member, uuid = await fileshare_member(wstund)
    size = 16 * MiB
    owner = FileOwner(member, {"f": (size, pattern_source())}, binary=binary, stop_after=512 * 1024)
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


async def test_downloader_leaving_aborts_the_owner(start_daemon: Any) -> None:
    # Hypercorn's shielded write to the departed caller only ends at TCP_USER_TIMEOUT
    # (server.send_timeout); a short one keeps this test's teardown short.
    wstund = await start_daemon(server={"shutdown_grace": 1.0, "send_timeout": 2.0})
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
                {
                    "method": body["method"],
                    "path": body["path"],
                    "query": body["query"],
                    "got": body.get("body"),
                }
            ),
        }
        await send(program, "http_response", reply)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{wstund.url}/echo/a/b?x=1", content=b"hello")
    assert response.status_code == 201
    expected = {"method": "POST", "path": "/echo/a/b", "query": "x=1", "got": "hello"}
    assert response.json() == expected
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


async def test_owner_error_mid_stream_truncates_and_chunk_idle_cuts(start_daemon: Any) -> None:
    daemon = await start_daemon(http_relay={"chunk_timeout": 0.5})
    host, member, uuid = await fileshare_member(daemon)
    url = f"{daemon.url}/fileshare/download/alice/f"

    async def answer(kind: int | None) -> str:
        request = await recv(member)
        rid = str(request["payload"]["requestId"])
        await send(member, "http_response_start", {"request_id": rid, "headers": {}})
        await member.send_message(binframe.encode(binframe.CHUNK, rid, b"x" * 1000))
        if kind is not None:
            await member.send_message(binframe.encode(kind, rid, b"disk on fire"))
        return rid

    for kind in (binframe.ABORT, None):  # owner error; then silence past chunk_timeout
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
                nursery.start_soon(answer, kind)
                async with client.stream("GET", url) as response:
                    assert response.status_code == 200
                    with pytest.raises(httpx.RemoteProtocolError):
                        async for _ in response.aiter_raw():
                            pass
        if kind is None:
            with trio.fail_after(5):
                abort = await recv(member)
            assert abort["type"] == "http_abort" and abort["payload"]["reason"] == "idle timeout"
        await wait_until(lambda: not daemon.hub.http_relay.exchanges)
        assert daemon.hub.http_relay.buffered == 0


async def test_owner_disconnect_before_start_is_502(wstund: RunningDaemon) -> None:
    host, member, uuid = await fileshare_member(wstund)

    async def vanish() -> None:
        assert (await recv(member))["type"] == "file_request"
        await member.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            nursery.start_soon(vanish)
            response = await client.get(f"{wstund.url}/fileshare/download/alice/f")
    assert response.status_code == 502 and response.json()["error"] == "owner_failed"
    assert wstund.hub.http_relay.exchanges == {}


async def test_program_round_trip_with_binary_body(wstund: RunningDaemon) -> None:
    program = await connect(wstund)
    await send(program, "register", {"name": "blob"}, msg_id="r")
    assert (await recv(program))["payload"]["success"] is True
    sent = bytes(range(256)) * 4

    async def answer() -> None:
        request = (await recv(program))["payload"]
        assert request["method"] == "PUT" and request["path"] == "/blob/x%20y"
        assert "body" not in request
        got = base64.b64decode(request["bodyBase64"])
        reply = {
            "request_id": request["request_id"],
            "status": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "bodyBase64": base64.b64encode(got[::-1]).decode(),
        }
        await send(program, "http_response", reply)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            nursery.start_soon(answer)
            response = await client.put(f"{wstund.url}/blob/x%20y", content=sent)
    assert response.status_code == 200 and response.content == sent[::-1]
    assert wstund.hub.http_relay.exchanges == {}


async def test_server_token_guards_downloads(start_daemon: Any) -> None:
    daemon = await start_daemon(server={"token": "srv"})
    host, uuid = await create_room(daemon, "fileshare", "Files", query="token=srv")
    member = await connect(daemon, "token=srv")
    await send(member, "join_instance", {"uuid": uuid, "userId": "alice"}, service="fileshare")
    assert (await recv(member))["payload"]["success"] is True
    owner = FileOwner(member, {"a.js": (1000, pattern_source())})
    daemon.nursery.start_soon(owner.run)
    url = f"{daemon.url}/fileshare/download/alice/a.js"
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            refused = await client.get(url)
            by_query = await client.get(f"{url}?token=srv")
            by_header = await client.get(url, headers={"Authorization": "Bearer srv"})
    assert refused.status_code == 401 and owner.requests == 2
    assert by_query.content == by_header.content == pattern_source()(0, 1000)


async def test_caller_leaving_before_the_head_leaves_no_entry(start_daemon: Any) -> None:
    daemon = await start_daemon(http_relay={"start_timeout": 1.0})
    host, member, uuid = await fileshare_member(daemon)
    with trio.fail_after(10):
        async with httpx.AsyncClient(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{daemon.url}/fileshare/download/alice/f")
        request = await recv(member)
        abort = await recv(member)
    assert abort["type"] == "http_abort"
    assert abort["payload"]["request_id"] == request["payload"]["requestId"]
    await wait_until(lambda: not daemon.hub.http_relay.exchanges)
    assert daemon.hub.inflight.count == 0


async def test_a_head_the_caller_cannot_be_given_is_502(start_daemon: Any) -> None:
    # Each refused head counts as an invalid message; this owner sends a dozen on purpose.
    wstund = await start_daemon(relay={"max_invalid_messages": 100})
    program = await connect(wstund)
    await send(program, "register", {"name": "odd"}, msg_id="r")
    assert (await recv(program))["payload"]["success"] is True
    bad_heads: list[tuple[int, dict[str, Any]]] = [
        (101, {}),  # an upgrade answer to a plain request
        (99, {}),
        (200, {"X-(bad)": "v"}),
        (200, {"X-A": "line\r\nX-Injected: 1"}),
        (200, {"X-A": {"nested": 1}}),
        (200, {"Content-Length": "abc"}),
    ]
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        for status, headers in bad_heads:
            # A whole response's Content-Length is the body's: the owner's is not read.
            kinds = ["http_response_start"] + ["http_response"] * ("Content-Length" not in headers)
            for kind in kinds:
                replies: list[httpx.Response] = []
                with trio.fail_after(10):
                    async with trio.open_nursery() as nursery:

                        async def call() -> None:
                            replies.append(await client.get("/odd/x"))  # noqa: B023

                        nursery.start_soon(call)
                        request = await recv(program)
                        assert request["type"] == "http_request", request
                        rid = request["payload"]["request_id"]
                        head = {"request_id": rid, "status": status, "headers": headers}
                        await send(program, kind, {**head, "body": "b"}, msg_id="h")
                        # The owner is told to stop and why (in either order).
                        told = {m["type"]: m for m in [await recv(program), await recv(program)]}
                        assert told["http_abort"]["payload"]["request_id"] == rid
                        assert told["error"]["id"] == "h"
                        assert told["error"]["payload"]["code"] == "invalid_payload"
                reply = replies[0]
                assert reply.status_code == 502, (status, headers, reply.text)
                assert reply.json()["error"] == "owner_failed"
                assert "invalid response head" in reply.json()["message"]
                assert "x-injected" not in reply.headers

        # What can be given is: a list is a repeated header, null leaves it out, and a whole
        # response's length is the body's whatever the owner declared (which would cut it).
        async with trio.open_nursery() as nursery:
            replies = []

            async def call_ok() -> None:
                replies.append(await client.get("/odd/ok"))

            nursery.start_soon(call_ok)
            rid = (await recv(program))["payload"]["request_id"]
            headers = {"Set-Cookie": ["a=1", "b=2"], "X-None": None, "Content-Length": "99"}
            await send(
                program, "http_response", {"request_id": rid, "headers": headers, "body": "ok"}
            )
    reply = replies[0]
    assert reply.status_code == 200 and reply.content == b"ok"
    assert reply.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "x-none" not in reply.headers
    assert reply.headers.get("content-length") in (None, "2")  # not the declared 99


async def test_a_body_past_its_content_length_is_cut_and_the_owner_stopped(
    wstund: RunningDaemon,
) -> None:
    program = await connect(wstund)
    await send(program, "register", {"name": "long"}, msg_id="r")
    assert (await recv(program))["payload"]["success"] is True
    replies: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    replies.append(await client.get("/long/x"))

                nursery.start_soon(call)
                rid = (await recv(program))["payload"]["request_id"]
                head = {"request_id": rid, "status": 200, "headers": {"Content-Length": "5"}}
                await send(program, "http_response_start", head)
                chunk = base64.b64encode(b"0123456789").decode()
                await send(
                    program, "http_response_chunk", {"request_id": rid, "chunk_base64": chunk}
                )
                abort = await recv(program)
                assert abort["type"] == "http_abort" and abort["payload"]["request_id"] == rid
    assert replies[0].status_code == 200 and replies[0].content == b"01234"
    await wait_until(lambda: not wstund.hub.http_relay.exchanges)
