"""Carry a tunnelled HTTP request to the node whose agent serves it, streamed both ways.

The node that got the request opens plain HTTP to the other node's ``advertise_url`` with the
same method, raw path, query and headers, plus ``X-Wstund-Cluster: <cluster secret>``; that node
checks the secret, drops the header and serves the request from its agent as if it came
straight from the caller. Bodies stream both ways at the pace of the slower side (httpx reads the
other node only as fast as our caller takes the bytes); a caller that leaves cancels the
node-to-node request, which the other node sees as its own caller leaving.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import httpx
import trio
import trio_websocket

from ..tunnel.asgi import (
    Receive,
    Scope,
    Send,
    ServerWebSocket,
    WebSocketClosed,
    send_json_error,
)

log = logging.getLogger("wstund.cluster")

HOP_HEADER = b"x-wstund-cluster"
# The caller's address as the first node saw it; believed only beside a valid secret.
CLIENT_HEADER = b"x-wstund-cluster-client"
# The caller's Host on a carried WebSocket (its handshake names the other node's address);
# believed only beside a valid secret.
HOST_HEADER = b"x-wstund-cluster-host"
_CLUSTER_HEADERS = (HOP_HEADER, CLIENT_HEADER, HOST_HEADER)
# Headers that describe one connection, not the request: never copied from one hop to the next.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        HOP_HEADER,
    }
)


def hop_secret(scope: Scope) -> str | None:
    """The cluster secret a request from another node carries (None on a caller's request)."""
    for key, value in scope["headers"]:
        if key.lower() == HOP_HEADER:
            return bytes(value).decode("latin-1")
    return None


def hop_allowed(given: str, secret: str) -> bool:
    """Constant-time check of a node-to-node request's secret (never with no secret set)."""
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def carried_client(headers: list[tuple[bytes, bytes]], secret: str) -> str | None:
    """The caller's address a request carried from another node names (``CLIENT_HEADER``),
    believed only with the cluster secret; None on any other request."""
    given = client = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == HOP_HEADER:
            given = bytes(value).decode("latin-1")
        elif lowered == CLIENT_HEADER:
            client = bytes(value).decode("latin-1")
    if client and given is not None and hop_allowed(given, secret):
        return client
    return None


def without_hop(scope: Scope) -> None:
    """Take a checked node-to-node request as the caller's own: its client is the one the
    first node saw (``CLIENT_HEADER``); the cluster headers go no further (the agent)."""
    client = None
    kept = []
    for name, value in scope["headers"]:
        lowered = name.lower()
        if lowered == CLIENT_HEADER:
            client = bytes(value).decode("latin-1")
        elif lowered not in _CLUSTER_HEADERS:
            kept.append((name, value))
    scope["headers"] = kept
    if client:
        scope["client"] = (client, 0)


def restore_host(scope: Scope, secret: str) -> None:
    """On a WebSocket carried from another node (valid secret), give it back the caller's Host,
    so that host routing (``{id}.{host_suffix}``) sees what the first node saw."""
    if scope["type"] != "websocket":
        return
    headers = scope["headers"]
    host = next((v for k, v in headers if k.lower() == HOST_HEADER), None)
    given = hop_secret(scope)
    if host is None or given is None or not hop_allowed(given, secret):
        return
    scope["headers"] = [(k, v) for k, v in headers if k.lower() != b"host"] + [(b"host", host)]


def node_headers(scope: Scope, skip: frozenset[bytes], secret: str) -> list[tuple[bytes, bytes]]:
    """The caller's headers for the next node: ``skip`` dropped, the caller's effective address
    (what this node's limits and logs saw) in ``CLIENT_HEADER``, the cluster secret added."""
    headers = [
        (bytes(k), bytes(v))
        for k, v in scope["headers"]
        if k.lower() not in skip and k.lower() not in _CLUSTER_HEADERS
    ]
    client = scope.get("client")
    if client:
        headers.append((CLIENT_HEADER, str(client[0]).encode("latin-1")))
    headers.append((HOP_HEADER, secret.encode()))
    return headers


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class _CallerGone(Exception):
    pass


async def forward_http(
    client: httpx.AsyncClient,
    base_url: str,
    secret: str,
    head_timeout: float,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Proxy one request to ``base_url`` (another node) and stream its answer to ``send``.

    503 ``node_unreachable`` when the node cannot be reached, 504 ``node_timeout`` when its
    answer's head takes longer than ``head_timeout``; a failure mid-body ends the response
    early (the caller sees a truncated response, never a hang).
    """
    raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    url = base_url.rstrip("/") + raw_path + (f"?{query}" if query else "")
    headers = node_headers(scope, _HOP_BY_HOP, secret)
    uploaded = trio.Event()
    has_body = _has_body(scope)

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _CallerGone
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            uploaded.set()

    request = client.build_request(
        scope["method"], url, headers=headers, content=body() if has_body else None
    )
    if not has_body:
        uploaded.set()
    try:
        await _exchange(client, request, base_url, head_timeout, receive, send, uploaded, has_body)
    except* _CallerGone:
        pass  # the caller left while uploading: the other node sees its request cut


async def _exchange(
    client: httpx.AsyncClient,
    request: httpx.Request,
    base_url: str,
    head_timeout: float,
    receive: Receive,
    send: Send,
    uploaded: trio.Event,
    has_body: bool,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_caller, receive, uploaded, has_body, nursery.cancel_scope)
        try:
            with trio.fail_after(head_timeout):
                response = await client.send(request, stream=True)
        except (trio.TooSlowError, httpx.TimeoutException):
            await send_json_error(send, 504, "node_timeout", "the node holding the agent is slow")
            nursery.cancel_scope.cancel()
            return
        except (httpx.HTTPError, OSError) as exc:
            log.warning("cluster: forwarding to %s failed: %r", base_url, exc)
            await send_json_error(
                send, 503, "node_unreachable", "the node holding the agent cannot be reached"
            )
            nursery.cancel_scope.cancel()
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # The other node went away mid-body: end without the body's end, so the caller
            # sees a truncated response.
            log.info("cluster: forwarded response from %s cut: %r", base_url, exc)
        finally:
            await response.aclose()
        nursery.cancel_scope.cancel()


async def _watch_caller(
    receive: Receive, uploaded: trio.Event, has_body: bool, scope: trio.CancelScope
) -> None:
    """Cancel the forwarding when the caller leaves (after its body, if any, was read)."""
    if has_body:
        await uploaded.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


# Handshake headers the node-to-node client makes itself.
_OWN_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
    }
)
# Close codes a peer reports but may not send (no status, abnormal, TLS failure).
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}


async def forward_websocket(
    base_url: str, secret: str, connect_timeout: float, scope: Scope, receive: Receive, send: Send
) -> None:
    """Carry one tunnelled WebSocket to ``base_url`` (another node): the handshake (a refusal
    comes back with its status, headers and body), then messages both ways and the close code."""
    caller = ServerWebSocket(scope, receive, send)
    if not await caller.wait_connect():
        return
    raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    url = base_url.replace("http", "ws", 1).rstrip("/") + raw_path + (f"?{query}" if query else "")
    headers = node_headers(scope, _HOP_BY_HOP | _OWN_HANDSHAKE, secret)
    host = next((v for k, v in scope["headers"] if k.lower() == b"host"), None)
    if host is not None:
        headers.append((HOST_HEADER, bytes(host)))
    try:
        async with trio_websocket.open_websocket_url(
            url,
            subprotocols=list(scope.get("subprotocols") or []),
            extra_headers=headers,
            connect_timeout=connect_timeout,
        ) as upstream:
            await caller.accept(upstream.subprotocol)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_downstream, upstream, caller, nursery.cancel_scope)
                await _upstream(caller, upstream)
                nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as rejected:
        refused = [
            (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
            for k, v in rejected.headers or ()
            if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        await caller.respond(rejected.status_code, refused, rejected.body or b"")
    except (trio_websocket.HandshakeError, OSError) as exc:
        log.warning("cluster: forwarding a WebSocket to %s failed: %r", base_url, exc)
        if caller.accepted:
            await caller.close(1011, "the node holding the agent went away")
        else:
            await caller.deny(
                503, "node_unreachable", "the node holding the agent cannot be reached"
            )


async def _upstream(caller: ServerWebSocket, upstream: trio_websocket.WebSocketConnection) -> None:
    """Caller → other node until the caller closes; its close code goes along."""
    try:
        while True:
            await upstream.send_message(await caller.receive())
    except WebSocketClosed as closed:
        await upstream.aclose(_UNSENDABLE.get(closed.code, closed.code))
    except trio_websocket.ConnectionClosed:
        pass  # the other side closed first: _downstream forwards its code


async def _downstream(
    upstream: trio_websocket.WebSocketConnection, caller: ServerWebSocket, done: trio.CancelScope
) -> None:
    """Other node → caller until it closes; its close code and reason go along."""
    try:
        while True:
            await caller.send(await upstream.get_message())
    except trio_websocket.ConnectionClosed as closed:
        reason = closed.reason
        code = reason.code if reason is not None else 1011
        await caller.close(_UNSENDABLE.get(code, code), (reason.reason or "") if reason else "")
    done.cancel()
