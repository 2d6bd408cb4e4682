"""HTTP through the relay across nodes: a fileshare download or a registered program's request
reaching a node that does not hold the answering peer's socket is carried to the node that does.

Which node holds a peer's socket is not in the registry (members come and go too often to be
worth a Redis write each), so the node that got the request asks the other live nodes in turn,
over the node-to-node HTTP of the tunnel (``X-Wstund-Cluster: <cluster secret>``). A node asked
so serves the request from its own sockets only and answers a miss as it would answer a caller
(503 ``owner_offline``, 404 ``not_found``); the first answer that is not a miss is streamed to the
caller as it comes, at the caller's pace. When every node misses, the caller gets this node's own
answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, cast

import httpx
import trio
from quart import Response, request

from ..tunnel.asgi import Scope
from ..web.errors import json_error
from .forward import _HOP_BY_HOP, hop_allowed, hop_secret, node_headers
from .remote import RemoteMember

if TYPE_CHECKING:
    from ..hub import Hub
    from ..relay.peer import Peer

log = logging.getLogger("wstund.cluster")

# Answers meaning "no such peer here": the next node is asked.
MISSES = {(503, "owner_offline"), (404, "not_found")}
_MISS_BODY_LIMIT = 4096
_SKIP = _HOP_BY_HOP | {b"content-length", b"host"}


def _scope() -> Scope:
    return cast("Scope", request.scope)


def is_cluster_header(name: str) -> bool:
    """Whether ``name`` is one of the node-to-node headers (never shown to a relay peer)."""
    return name.lower().startswith("x-wstund-cluster")


def local_members(hub: Hub, service: str, user_id: str, instance: str | None) -> list[Peer]:
    """This node's sockets of member ``user_id`` in rooms of ``service`` (room ``instance`` if
    given): members of rooms held here, then of rooms held elsewhere (any service: a room held
    elsewhere is known here by its uuid only)."""
    found = [
        room.members[user_id]
        for room in hub.instances_of(service)
        if user_id in room.members and (instance is None or room.uuid == instance)
    ]
    if hub.cluster is None:
        return found
    here = [peer for peer in found if not isinstance(peer, RemoteMember)]  # socket elsewhere
    for peer in hub.cluster.members_here():
        room = peer.joined
        if peer.user_id == user_id and room is not None:
            if instance is None or room.uuid == instance:
                here.append(peer)
    return here


async def from_another_node(hub: Hub, body: bytes = b"") -> Response | None:
    """The current request, answered by the node holding the peer it needs; None to answer it
    here (no cluster, a request from another node, or every node missed)."""
    cluster = hub.cluster
    if cluster is None or cluster.http is None:
        return None
    secret = hub.config.cluster.secret
    given = hop_secret(_scope())
    if given is not None:
        if not hop_allowed(given, secret):
            return json_error(403, "forbidden", "wrong cluster secret")
        return None  # asked by another node: this node's own sockets only
    if not secret:
        return None
    raw_path = bytes(request.scope.get("raw_path") or request.path.encode()).decode("latin-1")
    query = bytes(request.scope.get("query_string", b"")).decode("latin-1")
    target = raw_path + (f"?{query}" if query else "")
    headers = node_headers(_scope(), _SKIP, secret)
    timeout = hub.config.cluster.request_timeout + hub.config.http_relay.start_timeout
    for node in await cluster.nodes():
        if node.node == cluster.node_id or not node.advertise_url:
            continue
        url = node.advertise_url.rstrip("/") + target
        answer = await _ask(cluster.http, request.method, url, headers, body, timeout)
        if answer is not None:
            return answer
    return None


async def program_elsewhere(hub: Hub) -> Response | None:
    """A request for a program not registered here, answered by the node where it is."""
    if hub.cluster is None or hop_secret(_scope()) is not None:
        return await from_another_node(hub)  # None, or 403 for a wrong secret
    limit = hub.config.http_relay.max_request_body
    data = await request.get_data(cache=False, as_text=False)
    assert isinstance(data, bytes)
    if len(data) > limit:
        return json_error(413, "body_too_large", f"request body over {limit}")
    return await from_another_node(hub, data)


async def _ask(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    timeout: float,
) -> Response | None:
    """One node's answer as a streamed response; None for a miss or an unreachable node."""
    built = http.build_request(method, url, headers=headers, content=body or None)
    try:
        with trio.fail_after(timeout):
            upstream = await http.send(built, stream=True)
    except (trio.TooSlowError, httpx.HTTPError, OSError) as exc:
        log.warning("cluster: asking %s for a relay peer failed: %r", url, exc)
        return None
    chunks = upstream.aiter_raw()
    try:
        prefix = await _miss_or_prefix(upstream, chunks)
    except BaseException:
        await upstream.aclose()
        raise
    if prefix is None:
        await upstream.aclose()
        return None
    return _streamed(upstream, prefix, chunks)


async def _miss_or_prefix(upstream: httpx.Response, chunks: AsyncIterator[bytes]) -> bytes | None:
    """None when the answer is a miss; else the start of its body read to tell."""
    if upstream.status_code not in {status for status, _ in MISSES}:
        return b""
    if not upstream.headers.get("content-type", "").startswith("application/json"):
        return b""
    data = b""
    async for chunk in chunks:
        data += chunk
        if len(data) > _MISS_BODY_LIMIT:
            return data  # too long for one of our error answers
    try:
        error = json.loads(data).get("error")
    except (ValueError, AttributeError):
        return data
    return None if (upstream.status_code, error) in MISSES else data


def _streamed(upstream: httpx.Response, prefix: bytes, chunks: AsyncIterator[bytes]) -> Response:
    async def body() -> AsyncIterator[bytes]:
        try:
            if prefix:
                yield prefix
            async for chunk in chunks:
                yield chunk
        except httpx.HTTPError as exc:
            log.info("cluster: relayed response from another node cut: %r", exc)
            raise  # the caller sees a truncated response, never a short "complete" one
        finally:
            await upstream.aclose()

    response = Response(body(), status=upstream.status_code)
    del response.headers["Content-Type"]
    for name, value in _kept(upstream.headers.raw):
        response.headers.add(name, value)
    response.timeout = None  # long downloads
    return response


def _kept(raw: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[str, str]]:
    for name, value in raw:
        if name.lower() not in _HOP_BY_HOP:
            yield name.decode("latin-1"), value.decode("latin-1")
