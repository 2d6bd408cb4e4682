"""HTTP routes answered through the relay: fileshare downloads and registered
programs. The engine is ``wstund.relay.httprelay``; this module is its Quart glue.
"""

from __future__ import annotations

import base64
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from quart import Blueprint, Response, request

from ..cluster.relayhttp import from_another_node, is_cluster_header, local_members
from ..exchange import ExchangeFailed, FailKind
from ..httpheaders import BodyLimit
from ..hub import Hub
from ..relay import protocol
from ..relay.httprelay import Exchange, Program
from ..relay.peer import Peer
from .errors import json_error

DOWNLOAD_PREFIX = b"/fileshare/download/"
# Content served for pages' peers runs in a sandbox: no access to this origin's storage.
PROGRAM_CSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"
BINARY_TYPES = ("application/octet-stream", "image/", "audio/", "video/")


def _find_member(hub: Hub, service: str, user_id: str, instance: str | None) -> Peer | None:
    """The member ``user_id`` of a room of ``service`` (of room ``instance`` when given), whose
    socket is on this node."""
    found = local_members(hub, service, user_id, instance)
    return found[0] if len(found) == 1 else None


async def relay_response(hub: Hub, exchange: Exchange) -> Response:
    """Wait for the owner's head and stream its body; JSON errors 502/504 before the head."""
    settings = hub.config.http_relay
    try:
        with hub.inflight.track():
            head = await exchange.wait_head(settings.start_timeout)
    except ExchangeFailed as failed:
        exchange.close()
        if failed.kind is FailKind.TIMEOUT:
            message = f"no response from the owner within {settings.start_timeout:g}s"
            return json_error(504, "owner_timeout", message)
        return json_error(502, "owner_failed", f"the owner did not answer: {failed}")
    except BaseException:
        exchange.close()  # the caller left while waiting (a cancellation)
        raise

    limit = BodyLimit(head.headers)

    async def body() -> AsyncIterator[bytes]:
        # Truncated propagates: the server then drops the connection without the final
        # chunk, so the caller sees a truncated response, never a short "complete" one.
        with hub.inflight.track():
            try:
                async for chunk in exchange.body(settings.chunk_timeout):
                    yield limit.take(chunk)
                    if limit.over:
                        exchange.fail("the response ran past its Content-Length")
                        exchange.abort_owner("response longer than its Content-Length")
                        return
            finally:
                exchange.close()

    response = Response(body(), status=head.status)
    # A generator that never started runs no ``finally``: closing on collection frees the entry
    # even when the caller leaves between the head and the first body byte.
    weakref.finalize(response, exchange.close)
    if any(name.lower() == "content-type" for name, _ in head.headers):
        del response.headers["Content-Type"]
    else:
        response.headers["Content-Type"] = "application/octet-stream"
    for name, value in head.headers:
        response.headers.add(name, value)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut long downloads
    return response


def _ask(peer: Peer, type_: str, payload: dict[str, Any], exchange: Exchange) -> bool:
    payload.update(request_id=exchange.id, binary=True, window=exchange.window)
    if not peer.offer(protocol.encode(type_, payload)):
        exchange.close()
        return False
    return True


def parse_download(raw_rest: bytes) -> tuple[str, str] | None:
    """(owner user id, local file id) from what follows ``/fileshare/download/``, or None.

    The reference page links ``encodeURIComponent(userId + "/" + localFileId)``: one segment
    whose slash arrives as ``%2F``; wstund's pages use two segments. Both split at the first
    slash after decoding, as the reference server does.
    """
    global_id = unquote(raw_rest.decode("latin-1"))
    owner_id, _, file_id = global_id.partition("/")
    if not owner_id or not file_id:
        return None
    return owner_id, file_id


async def download(hub: Hub, raw_path: bytes, instance: str | None) -> Response:
    """``GET /fileshare/download/{ownerId}/{fileId}`` (or ``{ownerId}%2F{fileId}``): ask the
    owner with ``file_request``, relay its bytes."""
    parsed = parse_download(raw_path[len(DOWNLOAD_PREFIX) :])
    if parsed is None:
        return json_error(
            404,
            "not_found",
            "expected /fileshare/download/{ownerId}/{fileId} or {ownerId}%2F{fileId}",
        )
    owner_id, file_id = parsed
    service = hub.services.get("fileshare")
    if service is None or not service.enabled:
        return json_error(403, "service_disabled", "the fileshare service is disabled")
    owner = _find_member(hub, "fileshare", owner_id, instance)
    if owner is None:
        elsewhere = await from_another_node(hub)  # its socket may be on another node
        if elsewhere is not None:
            return elsewhere
        return json_error(503, "owner_offline", f"{owner_id!r} is not connected to a file room")
    settings = hub.config.http_relay
    exchange = hub.http_relay.open(
        owner, window=settings.window, channel_size=settings.channel_size
    )
    # fileId is the global id, as the reference sends it; localFileId is new.
    payload = {"requestId": exchange.id, "fileId": f"{owner_id}/{file_id}", "localFileId": file_id}
    if not _ask(owner, "file_request", payload, exchange):
        return json_error(503, "owner_offline", f"{owner_id!r} is not accepting requests")
    response = await relay_response(hub, exchange)
    if response.status_code < 300:
        # A file is always a download, never a page of this origin.
        if not response.headers.get("Content-Disposition", "").startswith("attachment"):
            response.headers["Content-Disposition"] = "attachment"
        response.headers["Content-Security-Policy"] = "sandbox"
    return response


async def forward_to_program(hub: Hub, program: Program) -> Response:
    """Send the current request to a registered program as ``http_request``; relay its answer."""
    settings = hub.config.http_relay
    data = await request.get_data(cache=False, as_text=False)
    assert isinstance(data, bytes)
    if len(data) > settings.max_request_body:
        return json_error(413, "body_too_large", f"request body over {settings.max_request_body}")
    raw_path = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string", b"").decode("latin-1")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if is_cluster_header(name):
            continue  # another node's secret: never shown to the program
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    payload: dict[str, Any] = {
        "method": request.method,
        "path": raw_path.decode("latin-1"),
        "query": query,
        "headers": headers,
    }
    if data:
        content_type = request.headers.get("Content-Type", "")
        try:
            if content_type.startswith(BINARY_TYPES):
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "binary content type")
            payload["body"] = data.decode("utf-8")
        except UnicodeDecodeError:
            payload["bodyBase64"] = base64.b64encode(data).decode()
    exchange = hub.http_relay.open(
        program.owner, window=settings.window, channel_size=settings.channel_size
    )
    if not _ask(program.owner, "http_request", payload, exchange):
        return json_error(503, "owner_offline", f"program {program.name!r} is not reachable")
    response = await relay_response(hub, exchange)
    response.headers["Content-Security-Policy"] = PROGRAM_CSP
    return response


def create_blueprint(hub: Hub) -> Blueprint:
    """The download route; registered programs are reached through the pages' catch-all."""
    routes = Blueprint("relayhttp", __name__)

    @routes.get("/fileshare/download/<path:rest>")
    async def fileshare_download(rest: str) -> Response:
        raw = request.scope.get("raw_path") or request.path.encode()
        return await download(hub, raw, request.args.get("instance"))

    return routes
