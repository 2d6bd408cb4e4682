import httpx

from .conftest import RunningDaemon, create_room, join_room, recv, send


async def test_room_round_trip(wstund: RunningDaemon) -> None:
    host, uuid = await create_room(wstund)
    member = await join_room(wstund, uuid, "bob", host=host)
    await send(member, "chat_message", {"text": "hi"})
    assert await recv(host) == {"type": "chat_message", "payload": {"text": "hi"}, "from": "bob"}
    async with httpx.AsyncClient(base_url=wstund.url) as client:
        body = (await client.get("/_api/instances")).json()
    assert [i["uuid"] for i in body["instances"]] == [uuid]
