"""wstund's own accept loop and its lean WebSocket lane.

Every socket accepted on the public listeners is counted here against ``server.max_connections``
and ``server.max_connections_per_ip`` before anything else runs for it. Its request head is read
with h11 (bounded in bytes and time); a WebSocket upgrade for the relay or for a tunnel agent is
served on the lean lane (wsproto straight on the socket, one task per connection, frames encoded
once for every recipient); every other request is handed, with the bytes already read, to
Hypercorn, so that Quart-Trio keeps serving plain HTTP and the other WebSockets.
"""
