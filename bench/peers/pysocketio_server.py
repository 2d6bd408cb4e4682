"""The python-socketio 5 peer of bench/relay.py, on uvicorn: the same room semantics as wstund.

``join`` ROOM enters the room and answers ``joined``; ``msg`` DATA goes to everyone else in the
sender's room; ``echo`` DATA comes back to the sender. It is asyncio code because that is what
python-socketio runs on; it is a peer to measure against, not part of wstund, and runs from the
venv the bench made for it under bench/.peers/:

    bench/.peers/python-socketio/bin/python bench/peers/pysocketio_server.py PORT
"""

import sys

import socketio
import uvicorn

sio = socketio.AsyncServer(
    async_mode="asgi",
    transports=["websocket"],
    ping_interval=600,  # the bench's idle connections do not answer pings while idle
    ping_timeout=600,
    max_http_buffer_size=1 << 20,
)
rooms: dict[str, str] = {}


@sio.on("join")
async def join(sid: str, name: str) -> None:
    rooms[sid] = str(name)
    await sio.enter_room(sid, rooms[sid])
    await sio.emit("joined", to=sid)


@sio.on("msg")
async def msg(sid: str, data: object) -> None:
    room = rooms.get(sid)
    if room is not None:
        await sio.emit("msg", data, room=room, skip_sid=sid)


@sio.on("echo")
async def echo(sid: str, data: object) -> None:
    await sio.emit("echo", data, to=sid)


@sio.on("disconnect")
async def disconnect(sid: str, *reason: object) -> None:
    rooms.pop(sid, None)


if __name__ == "__main__":
    uvicorn.run(
        socketio.ASGIApp(sio),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        ws_per_message_deflate=False,
        backlog=4096,
    )
