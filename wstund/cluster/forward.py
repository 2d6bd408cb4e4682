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

from ..tunnel.asgi import Receive, Scope, Send, send_json_error

log = logging.getLogger("wstund.cluster")

HOP_HEADER = b"x-wstund-cluster"
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


def without_hop(scope: Scope) -> None:
    """Drop the cluster secret from a request before it goes any further (the agent)."""
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != HOP_HEADER]


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
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
    headers.append((HOP_HEADER, secret.encode()))
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
