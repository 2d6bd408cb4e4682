// The Socket.IO 4.8 peer of bench/relay.py: the same room semantics as wstund and
// bench/baseline_server.py, written the way a Socket.IO user would.
//
//   "join" ROOM  -> the socket enters ROOM and is told "joined"
//   "msg"  DATA  -> DATA goes to everyone else in the socket's room (owner -> members,
//                   member -> owner + the other members): one encode for every recipient
//   "echo" DATA  -> DATA comes back to the sender
//
// Run by bench/relay.py with the socket.io package it installed itself into bench/.peers/:
//   NODE_PATH=bench/.peers/node/node_modules node bench/peers/socketio_server.js PORT
"use strict";
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const io = new Server(port, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  // The bench's idle connections do not answer Engine.IO pings while they are idle.
  pingInterval: 600000,
  pingTimeout: 600000,
  maxHttpBufferSize: 1 << 20,
});

io.on("connection", (socket) => {
  let room = null;
  socket.on("join", (name) => {
    room = String(name);
    socket.join(room);
    socket.emit("joined");
  });
  socket.on("msg", (data) => {
    if (room !== null) socket.to(room).emit("msg", data);
  });
  socket.on("echo", (data) => socket.emit("echo", data));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => io.close(() => process.exit(0)));
}
