"""What the relay does with each frame a peer sends: control messages and room traffic.

Control messages are answered by the server; every other type is room traffic, forwarded as the
original frame (never re-encoded): member → owner (inbox) and other members, owner → members.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from .. import closecodes
from ..hub import Hub
from . import budget, httphandlers, protocol
from .instance import Instance
from .peer import Frame, Peer
from .protocol import Envelope, ProtocolError

# Errors that say the client sent a malformed frame; enough of them close the socket (1008).
_INVALID_CODES = frozenset(
    {
        protocol.INVALID_JSON,
        protocol.INVALID_MESSAGE,
        protocol.INVALID_PAYLOAD,
        protocol.UNKNOWN_TYPE,
        protocol.NOT_JOINED,
    }
)
MAX_NAME_LENGTH = 200
MAX_USER_ID_LENGTH = 128


class RequestFailed(Exception):
    """A reclaim the reference answers with ``instance_reclaimed {success: false, error}``
    rather than an ``error``: the room exists but cannot be taken now (its owner is connected).
    """

    def __init__(self, reply_type: str, code: str, message: str) -> None:
        super().__init__(message)
        self.reply_type, self.code, self.message = reply_type, code, message


def reject(hub: Hub, peer: Peer, error: ProtocolError) -> None:
    """Answer a refused frame with an ``error``; repeated malformed frames close with 1008."""
    peer.offer(protocol.encode_error(error.code, error.message, error.msg_id))
    if error.code not in _INVALID_CODES:
        return
    peer.invalid_messages += 1
    if peer.invalid_messages >= hub.config.relay.max_invalid_messages:
        peer.offer(
            protocol.encode_error(
                protocol.TOO_MANY_INVALID,
                f"{peer.invalid_messages} invalid messages: closing the connection",
            )
        )
        peer.close(closecodes.POLICY_VIOLATION, "too many invalid messages")


def _rate_limited(hub: Hub, peer: Peer, strikes: int, msg_id: protocol.MessageId | None) -> None:
    """A member over its rate: the frame is refused with ``rate_limited``; 4029 after
    ``relay.max_rate_limited`` refusals."""
    peer.offer(
        protocol.encode_error(
            protocol.RATE_LIMITED, "over the member rate limit: message not delivered", msg_id
        )
    )
    if strikes >= hub.config.relay.max_rate_limited:
        peer.close(closecodes.RATE_LIMITED, "rate limited")


async def handle_text(hub: Hub, peer: Peer, text: str) -> None:
    """Handle one text frame from ``peer``."""
    envelope: Envelope | None = None
    try:
        envelope = protocol.decode_envelope(text)
        control = _CONTROL.get(envelope.type)
        if control is not None:
            await control(hub, peer, envelope)
        elif envelope.type in protocol.SERVER_TYPES or envelope.type in httphandlers.SERVER_TYPES:
            raise ProtocolError(
                protocol.UNKNOWN_TYPE,
                f"{envelope.type!r} is sent by the server, not to it",
                envelope.id,
            )
        else:
            await _room_traffic(hub, peer, envelope, text)
    except ProtocolError as error:
        reject(hub, peer, error)
    except RequestFailed as failure:
        peer.offer(
            protocol.encode(
                failure.reply_type,
                {
                    "success": False,
                    "error": failure.message,
                    "message": failure.message,
                    "code": failure.code,
                },
                envelope.id if envelope is not None else None,
            )
        )


async def handle_binary(hub: Hub, peer: Peer, data: bytes) -> None:
    """Handle one binary frame: room bytes, forwarded unchanged like text room traffic."""
    try:
        if await httphandlers.handle_binary(hub, peer, data):
            return
        await _forward(hub, peer, data, None, None)
    except ProtocolError as error:
        reject(hub, peer, error)


# -- control messages ---------------------------------------------------------------------------


def _check_payload_server_token(hub: Hub, envelope: Envelope, given: str | None) -> None:
    """The reference carries ``server_token`` in the payload; a wrong one is refused with an
    ``error`` (the socket itself passed the handshake's token check, so it stays open)."""
    expected = hub.config.server.token
    if not expected or given is None:
        return
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ProtocolError(protocol.INVALID_SERVER_TOKEN, "Invalid server auth token", envelope.id)


class _Handled(Exception):
    """The request was answered (and the peer closed); nothing more to send."""


def _check_room_quota(hub: Hub, peer: Peer, msg_id: protocol.MessageId | None) -> None:
    if peer.joined is not None:
        raise ProtocolError(
            protocol.ALREADY_JOINED, "a member connection cannot host a room", msg_id
        )
    limit = hub.config.relay.max_rooms_per_connection
    if len(peer.owned) >= limit:
        raise ProtocolError(
            protocol.TOO_MANY_ROOMS, f"this connection already hosts {limit} rooms", msg_id
        )


async def _create_instance(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    msg_id = envelope.id
    request = protocol.decode_payload(envelope, protocol.CreateInstance)
    _check_payload_server_token(hub, envelope, request.server_token)
    if not envelope.service:
        raise ProtocolError(protocol.SERVICE_REQUIRED, "Service name is required", msg_id)
    service = hub.services.get(envelope.service)
    if service is None:
        raise ProtocolError(
            protocol.SERVICE_NOT_FOUND, f"unknown service {envelope.service!r}", msg_id
        )
    if not service.enabled:
        raise ProtocolError(
            protocol.SERVICE_DISABLED, f"service {envelope.service!r} is disabled", msg_id
        )
    _check_room_quota(hub, peer, msg_id)
    name = request.name.strip()[:MAX_NAME_LENGTH] or "Room"
    instance = await hub.open_instance(service.name, name, request.token, peer)
    peer.offer(
        protocol.encode(
            "instance_created",
            {
                "success": True,
                "uuid": instance.uuid,
                "name": instance.name,
                "hasToken": instance.has_token,
                "ownerKey": instance.owner_key,
            },
            msg_id,
        )
    )


async def _reclaim_instance(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    msg_id = envelope.id
    request = protocol.decode_payload(envelope, protocol.ReclaimInstance)
    _check_payload_server_token(hub, envelope, request.server_token)
    _check_rate(hub, peer)
    instance = hub.instances.get(request.uuid)
    if instance is None and hub.cluster is not None:
        # The room may live on another node: that node runs the same checks.
        _check_room_quota(hub, peer, msg_id)
        try:
            failed = await hub.cluster.reclaim(peer, envelope.service, request, msg_id)
        except ProtocolError as error:
            if error.code in (
                protocol.INSTANCE_NOT_FOUND,
                protocol.INVALID_TOKEN,
                protocol.NOT_OWNER,
            ):
                _count_failure(hub, peer)
            raise
        if failed is not None:
            raise RequestFailed("instance_reclaimed", *failed)
        return
    if instance is None:
        _count_failure(hub, peer)
        raise ProtocolError(protocol.INSTANCE_NOT_FOUND, "Instance not found", msg_id)
    if envelope.service and envelope.service != instance.service:
        raise ProtocolError(
            protocol.SERVICE_MISMATCH, f"instance belongs to {instance.service!r}", msg_id
        )
    if not instance.token_matches(request.token):
        _count_failure(hub, peer)
        raise ProtocolError(protocol.INVALID_TOKEN, "Invalid instance token", msg_id)
    if not instance.may_reclaim(peer, request.ownerKey):
        _count_failure(hub, peer)
        raise ProtocolError(
            protocol.NOT_OWNER,
            "only the room's owner may reclaim it: present its ownerKey, or reclaim from the"
            " browser that created it",
            msg_id,
        )
    if instance.owner is not None:
        raise RequestFailed(
            "instance_reclaimed",
            protocol.OWNER_CONNECTED,
            "Cannot reclaim instance (owner already connected or grace period expired)",
        )
    _check_room_quota(hub, peer, msg_id)
    instance.reclaim(peer)
    peer.owned[instance.uuid] = instance
    peer.offer(
        protocol.encode(
            "instance_reclaimed",
            {
                "success": True,
                "uuid": instance.uuid,
                "name": instance.name,
                "hasToken": instance.has_token,
                "userCount": len(instance.members),
                "ownerKey": instance.owner_key,
            },
            envelope.id,
        )
    )


def _check_rate(hub: Hub, peer: Peer) -> None:
    """Refuse (4029) an address that failed too many joins in the last minute."""
    limit = hub.config.relay.failed_joins_per_minute
    if hub.failed_joins.count(peer.address) >= limit:
        peer.offer(
            protocol.encode_error(
                protocol.RATE_LIMITED, f"more than {limit} failed joins in a minute; try later"
            )
        )
        peer.close(closecodes.RATE_LIMITED, "too many failed joins")
        raise _Handled


def _count_failure(hub: Hub, peer: Peer) -> None:
    hub.failed_joins.add(peer.address)


async def _join_instance(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    msg_id = envelope.id
    request = protocol.decode_payload(envelope, protocol.JoinInstance)
    _check_rate(hub, peer)
    if peer.joined is not None or peer.owned:
        raise ProtocolError(protocol.ALREADY_JOINED, "this connection is already in a room", msg_id)
    instance = hub.instances.get(request.uuid)
    if instance is None and hub.cluster is not None:
        # The room may live on another node: that node runs the same checks (check_join).
        try:
            await hub.cluster.join(peer, envelope.service, request, msg_id)
        except ProtocolError as error:
            if error.code in (protocol.INSTANCE_NOT_FOUND, protocol.INVALID_TOKEN):
                _count_failure(hub, peer)
            raise
        return
    if instance is None:
        _count_failure(hub, peer)
        raise ProtocolError(
            protocol.INSTANCE_NOT_FOUND, "Instance not found or not available", msg_id
        )
    try:
        user_id = check_join(hub, instance, envelope.service, request.token, request.userId, msg_id)
    except ProtocolError as error:
        if error.code == protocol.INVALID_TOKEN:
            _count_failure(hub, peer)
        raise
    peer.offer(join_ack(instance.uuid, instance.name, user_id, msg_id))
    instance.add_member(user_id, peer)


def check_join(
    hub: Hub,
    instance: Instance,
    service: str | None,
    token: str | None,
    user_id: str | None,
    msg_id: protocol.MessageId | None,
) -> str:
    """Whether a member may join ``instance`` (on this node, whichever node its socket is on);
    return its user id (the one asked for, or a new one), or raise the refusal."""
    if service and service != instance.service:
        raise ProtocolError(
            protocol.SERVICE_MISMATCH,
            f"instance belongs to service {instance.service!r}, not {service!r}",
            msg_id,
        )
    if not instance.token_matches(token):
        raise ProtocolError(protocol.INVALID_TOKEN, "Invalid instance token", msg_id)
    if instance.owner is None:
        raise ProtocolError(
            protocol.OWNER_AWAY,
            "Instance not found or not available: the host is away; retry soon",
            msg_id,
        )
    limit = hub.config.relay.max_members_per_room
    if len(instance.members) >= limit:
        raise ProtocolError(protocol.ROOM_FULL, f"the room is full ({limit} members)", msg_id)
    user_id = user_id or f"user-{secrets.token_hex(4)}"
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ProtocolError(
            protocol.INVALID_PAYLOAD, f"userId longer than {MAX_USER_ID_LENGTH} characters", msg_id
        )
    if user_id in instance.members:
        raise ProtocolError(protocol.USER_ID_TAKEN, f"user id {user_id!r} is taken", msg_id)
    return user_id


def join_ack(uuid: str, name: str, user_id: str, msg_id: protocol.MessageId | None) -> str:
    """The ``ack`` a member gets once seated."""
    return protocol.encode(
        "ack",
        {
            "success": True,
            "message": f"Joined {name}",
            "userId": user_id,
            "instanceUuid": uuid,
            "instanceName": name,
        },
        msg_id,
    )


async def _list_instances(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    if hub.cluster is not None:
        rooms = await hub.cluster.list_rooms(envelope.service or None)
    else:
        rooms = [i.describe() for i in hub.instances_of(envelope.service or None)]
    peer.offer(protocol.encode("instance_list", {"instances": rooms}, envelope.id))


async def _kick_client(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    request = protocol.decode_payload(envelope, protocol.KickClient)
    instance = _owned_instance(hub, peer, request.instanceUuid, envelope.id)
    held_elsewhere = hub.cluster.owns_remotely(instance) if hub.cluster is not None else None
    if held_elsewhere is not None:  # its node kicks, or answers user_not_found
        held_elsewhere.kick(request.userId, envelope.id)
        return
    if not hub.kick(instance, request.userId, "kicked by host", envelope.id):
        raise ProtocolError(
            protocol.USER_NOT_FOUND, f"no user {request.userId!r} in this room", envelope.id
        )


async def _ping(hub: Hub, peer: Peer, envelope: Envelope) -> None:
    peer.offer(protocol.encode("pong", {}, envelope.id))


_Control = Callable[[Hub, Peer, Envelope], Awaitable[None]]


def _answered(handler: _Control) -> _Control:
    """Wrap a handler so that a request already answered (``_Handled``) ends quietly."""

    async def run(hub: Hub, peer: Peer, envelope: Envelope) -> None:
        try:
            await handler(hub, peer, envelope)
        except _Handled:
            pass

    return run


_CONTROL: dict[str, _Control] = {
    protocol.CREATE_INSTANCE: _answered(_create_instance),
    protocol.RECLAIM_INSTANCE: _answered(_reclaim_instance),
    protocol.JOIN_INSTANCE: _answered(_join_instance),
    protocol.LIST_INSTANCES: _list_instances,
    protocol.KICK_CLIENT: _kick_client,
    protocol.PING: _ping,
}
_CONTROL.update(httphandlers.CONTROL)  # answers to HTTP requests, never room traffic


# -- room traffic -------------------------------------------------------------------------------


def _owned_instance(
    hub: Hub, peer: Peer, uuid: str | None, msg_id: protocol.MessageId | None
) -> Instance:
    """The room an owner's message is about: the one named, or its only room."""
    if uuid is None:
        if len(peer.owned) == 1:
            return next(iter(peer.owned.values()))
        raise ProtocolError(
            protocol.INSTANCE_REQUIRED,
            "this connection hosts several rooms: name one with payload.instanceUuid",
            msg_id,
        )
    instance = peer.owned.get(uuid)
    if instance is not None:
        return instance
    if uuid in hub.instances:
        raise ProtocolError(protocol.NOT_OWNER, "only the room's owner may do that", msg_id)
    raise ProtocolError(protocol.INSTANCE_NOT_FOUND, f"no instance {uuid!r}", msg_id)


async def _room_traffic(hub: Hub, peer: Peer, envelope: Envelope, text: str) -> None:
    routing = protocol.Routing()
    if bytes(envelope.payload).lstrip()[:1] == b"{" and peer.owned:
        routing = protocol.decode_payload(envelope, protocol.Routing)
    await _forward(hub, peer, text, routing, envelope)


async def _forward(
    hub: Hub,
    peer: Peer,
    frame: Frame,
    routing: protocol.Routing | None,
    envelope: Envelope | None,
) -> None:
    """Forward a room frame: member → owner + members, owner → members (or ``to``).

    Text frames gain the server-stamped sender (``from``: the member's user id, null for the
    host), so members cannot pose as each other; binary frames go unchanged.
    """
    msg_id = envelope.id if envelope is not None else None
    metrics = hub.metrics
    if isinstance(frame, str):
        frame = protocol.stamp_sender(frame, peer.user_id if peer.joined is not None else None)
    if peer.joined is not None:
        metrics.member_messages.inc()
        metrics.member_bytes.inc(len(frame))
        strikes = budget.charge(peer, len(frame), hub.config.relay)
        if strikes:
            _rate_limited(hub, peer, strikes, msg_id)
            return
        if not await peer.joined.from_member(peer, frame, hub.config.relay.slow_consumer_timeout):
            raise ProtocolError(
                protocol.HOST_BUSY, "the host is not keeping up; message not delivered", msg_id
            )
        return
    if peer.owned:
        metrics.owner_messages.inc()
        metrics.owner_bytes.inc(len(frame))
        routing = routing or protocol.Routing()
        instance = _owned_instance(hub, peer, routing.instanceUuid, msg_id)
        missing = instance.from_owner(frame, protocol.recipients(routing.to))
        if missing:
            raise ProtocolError(
                protocol.USER_NOT_FOUND, f"not in the room: {', '.join(missing)}", msg_id
            )
        return
    if envelope is None:
        raise ProtocolError(protocol.NOT_JOINED, "binary frames need a room: join or create one")
    raise ProtocolError(
        protocol.UNKNOWN_TYPE,
        f"unknown message type {envelope.type!r} (room messages need a joined or created room)",
        msg_id,
    )
