"""HTTP routes of the client API (SPEC §15.5): the seed's endpoints and what features need.

Handlers parse their input at the edge (query, path, JSON body) and raise `HearthError`s; the
guard middleware renders every error as `{"error": {code, name, message}}` with its status.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from aiohttp import web

from hearthmesh.node.api.action_routes import ACTION_ROUTES
from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.client_routes import CLIENT_ROUTES
from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.api.group_routes import GROUP_ROUTES
from hearthmesh.node.api.openapi import openapi_document
from hearthmesh.node.api.pairing import qr_data_uri
from hearthmesh.node.api.push import (
    decode_target,
    encode_target,
    load_vapid_key,
    new_subscription_id,
    parse_target,
)
from hearthmesh.node.api.service import SERVICE_KEY, ApiService
from hearthmesh.node.api.social_routes import SOCIAL_ROUTES
from hearthmesh.node.api.verify_routes import VERIFY_ROUTES
from hearthmesh.node.api.views import decode_cursor, hlc_view
from hearthmesh.node.api.ws import websocket_handler
from hearthmesh.node.media.sealed import put_sealed, read_opened
from hearthmesh.node.p2p.errors import DialFailed
from hearthmesh.node.social.people import ProfileUpdate
from hearthmesh.protocol.client_api import MAX_FRAME_BYTES as MAX_CLIENT_FRAME_BYTES
from hearthmesh.protocol.client_api import (
    MAX_GROUP_MEMBERS,
    MAX_PAGE_NUMBER,
    decode_count,
    decode_hex_id,
    decode_send,
    decode_text,
    decode_user,
)
from hearthmesh.protocol.content import MAX_NOTE_BYTES
from hearthmesh.protocol.envelope import PROTOCOL_VERSION, RoomId
from hearthmesh.protocol.errors import (
    ErrorCode,
    InvalidIdentifier,
    MalformedMessage,
    NotAuthorized,
    NotFound,
    TooLarge,
)
from hearthmesh.protocol.friend_link import (
    MAX_FRIEND_LINK_CHARS,
    decode_friend_link,
    encode_friend_link,
)
from hearthmesh.protocol.home_record import decode_home_record
from hearthmesh.protocol.identity import UserId, decode_device_id, device_id_text, user_id_text
from hearthmesh.protocol.linking import encode_link_code, short_code
from hearthmesh.protocol.media_type import check_media_type
from hearthmesh.protocol.membership import MAX_ADD_TARGETS, MAX_GROUP_NAME_BYTES
from hearthmesh.storage.api import PushSubscription

__all__ = ["ROUTES", "add_routes", "documented_path"]

MAX_PAGE_SIZE: Final = 100
_UPLOAD_READ_BYTES: Final = 256 * 1024
_INLINE_MEDIA: Final = ("image/", "audio/", "video/")
"""Shown in place (the sandbox policy keeps an SVG's scripts still); all else downloads."""
MAX_PUSH_SUBSCRIPTIONS: Final = 32
"""Push endpoints one user may register (SPEC §19)."""


def _version() -> str:
    try:
        return version("hearthmesh")
    except PackageNotFoundError:
        return "0+unknown"


def _service(request: web.Request) -> ApiService:
    return request.app[SERVICE_KEY]


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    return default if text is None else decode_count(text, name, low, high)


def _uid_param(request: web.Request) -> UserId | None:
    text = request.query.get("uid")
    return None if text is None else decode_user(text, "uid")


def _room(request: web.Request, text: str | None) -> RoomId:
    return RoomId(decode_hex_id(text, "conversation id"))


def _text(body: dict[str, Any], name: str, max_bytes: int, default: str | None = None) -> str:
    return decode_text(body.get(name, default), name, max_bytes=max_bytes)


# --- node -------------------------------------------------------------------------------------


async def node_status(request: web.Request) -> web.Response:
    service = _service(request)
    node = service.node
    users, homes = node.unreachable()
    failure = node.failure
    return web.json_response(
        {
            "state": "running" if failure is None else "failed",
            "failure": None if failure is None else str(failure),
            "peer_id": node.peer_id,
            "listen_addrs": node.listen_addrs,
            "user_id": user_id_text(node.user_id),
            "device_id": device_id_text(node.keyring.device_id),
            "connected_peers": node.connected_peers(),
            "reachability": node.reachability,
            "relays": node.relays(),
            "peer_paths": node.peer_paths(),
            "hole_punches": {
                "tried": node.hole_punches().tried,
                "direct": node.hole_punches().direct,
            },
            "connections_closed": node.connections_closed(),
            "home_lookups": node.home_lookups,
            "wire": node.wire(),
            "unreachable": {"users": [user_id_text(u) for u in users], "own_homes": homes},
            "clients": len(service.sessions),
            "undecryptable": node.undecryptable,
            "slow_arrivals": node.slow_arrivals(),
            "deferred_due_again": node.deferred_due_again,
            "capability_asks": node.capability_asks(),
            "outages_ended": node.outages_ended(),
            "standing": {
                "charged_by_protocol": dict(sorted(node.charged_by_protocol().items())),
                "bans": node.bans,
                "prefix_bans": node.prefix_bans,
            },
            "api_url": service.api_url,
            "version": _version(),
            "protocol_version": PROTOCOL_VERSION,
        }
    )


async def connect_peer(request: web.Request) -> web.Response:
    body = await read_json(request)
    address = _text(body, "address", 1024)
    if "/p2p/" not in address:
        raise MalformedMessage("address is a multiaddr ending in /p2p/<peer id>")
    try:
        peer_id = await _service(request).node.connect(address)
    except DialFailed as exc:  # well-formed input; nobody answers there
        raise NotFound(f"no peer answered: {exc}") from None
    return web.json_response({"peer_id": peer_id})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(_version()))


# --- conversations ----------------------------------------------------------------------------


async def list_conversations(request: web.Request) -> web.Response:
    service = _service(request)
    service.require_self(_uid_param(request))
    page_size = _int_param(request, "page_size", 20, 1, MAX_PAGE_SIZE)
    page_number = _int_param(request, "page_number", 1, 1, MAX_PAGE_NUMBER)
    requests = request.query.get("requests", "include")
    if requests not in ("exclude", "only", "include"):
        raise MalformedMessage("requests is exclude, only or include")
    return web.json_response(await service.conversations(page_size, page_number, requests))


async def create_conversation(request: web.Request) -> web.Response:
    body = await read_json(request)
    user = decode_user(body.get("recipient_id"), "recipient_id")
    created = await _service(request).create_conversation(user)
    return web.json_response(created, status=201)


async def delete_conversation(request: web.Request) -> web.Response:
    service = _service(request)
    service.require_self(_uid_param(request))
    room = _room(request, request.query.get("id"))
    if not await service.node.delete_conversation(room):
        raise NotFound(f"no conversation {room.hex()[:16]} in the list")
    return web.json_response({"id": room.hex(), "deleted": True})


async def conversation_details(request: web.Request) -> web.Response:
    service = _service(request)
    service.require_self(_uid_param(request))
    room = _room(request, request.match_info["id"])
    cursor_text = request.query.get("cursor")
    cursor = None if cursor_text is None else decode_cursor(cursor_text)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE_SIZE)
    return web.json_response(await service.details(room, cursor, limit))


async def send_message(request: web.Request) -> web.Response:
    """The WebSocket `send`, over HTTP (for scripts and the CLI)."""
    # The body is a WebSocket `send` frame's fields: the same limit, decoded from the object in
    # hand (no JSON text is made again to be parsed again).
    body = await read_json(request, max_bytes=MAX_CLIENT_FRAME_BYTES)
    frame = {"client_id": "http", **body, "room_id": request.match_info["id"]}
    command = decode_send(frame)
    envelope = await _service(request).send(command)
    return web.json_response(
        {
            "client_id": command.client_id,
            "message_id": envelope.message_id.hex(),
            "room_id": envelope.room.hex(),
            "hlc": hlc_view(envelope.hlc),
        },
        status=201,
    )


# --- friends ----------------------------------------------------------------------------------


async def list_friends(request: web.Request) -> web.Response:
    service = _service(request)
    service.require_self(_uid_param(request))
    return web.json_response({"friends": await service.friends()})


async def list_friend_requests(request: web.Request) -> web.Response:
    """Pending requests to our user (`direction=incoming`, the default) or from it (SPEC §18)."""
    service = _service(request)
    direction = request.query.get("direction", "incoming")
    if direction not in ("incoming", "outgoing"):
        raise MalformedMessage("direction must be incoming or outgoing")
    store = service.node.store
    outgoing = direction == "outgoing"
    listing = store.store.friend_requests_sent if outgoing else store.store.friend_requests
    items = []
    for r in await store.read(listing, service.own):
        view = await service.profile(r.recipient if outgoing else r.sender)
        items.append({**view, "note": r.note, "created_ms": r.created_ms})
    return web.json_response({"direction": direction, "requests": items})


async def send_friend_request(request: web.Request) -> web.Response:
    """Ask a user by id, or by the `hearthmesh:` friend link their client showed (SPEC §32.2)."""
    body = await read_json(request)
    service = _service(request)
    if "link" in body:
        user, record = decode_friend_link(_text(body, "link", MAX_FRIEND_LINK_CHARS))
        if record is not None:
            if decode_home_record(record).user != user:
                raise MalformedMessage("the link's home record is another user's")
            await service.node.learn_home_record(record)  # verified there (SPEC §13.2)
    else:
        user = decode_user(body.get("user_id"), "user_id")
    note = _text(body, "note", MAX_NOTE_BYTES, default="")
    return web.json_response(await service.friend_request(user, note), status=202)


async def friend_invite(request: web.Request) -> web.Response:
    """Our friend link and its QR code, for another user to add us (SPEC §32.2)."""
    node = _service(request).node
    link = encode_friend_link(node.user_id, node.home_record())
    return web.json_response({"link": link, "qr": qr_data_uri(link)})


async def accept_friend_request(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    await _service(request).answer_friend_request(user, accept=True)
    return web.json_response({"user_id": user_id_text(user), "accepted": True})


async def decline_friend_request(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    await _service(request).answer_friend_request(user, accept=False)
    return web.json_response({"user_id": user_id_text(user), "declined": True})


async def cancel_friend_request(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    await _service(request).cancel_friend_request(user)
    return web.json_response({"user_id": user_id_text(user), "cancelled": True})


# --- groups -----------------------------------------------------------------------------------


async def list_groups(request: web.Request) -> web.Response:
    return web.json_response({"groups": await _service(request).groups()})


async def create_group(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = _text(body, "name", MAX_GROUP_NAME_BYTES)
    members_raw = body.get("members", [])
    if not isinstance(members_raw, list) or len(members_raw) > MAX_GROUP_MEMBERS:
        raise MalformedMessage(f"members is a list of at most {MAX_GROUP_MEMBERS} user ids")
    members = [decode_user(m, "member") for m in members_raw]
    if len(set(members)) != len(members):
        raise MalformedMessage("members names a user twice")
    open_ = body.get("open", False)
    if not isinstance(open_, bool):
        raise MalformedMessage("open is true or false")
    service = _service(request)
    if service.own in members:
        raise MalformedMessage("the creator is a member already")
    room = await service.node.create_group(name, members, open_=open_)
    return web.json_response(await service.room_summary(room), status=201)


async def add_group_member(request: web.Request) -> web.Response:
    service = _service(request)
    room = _room(request, request.match_info["id"])
    await service.require_room(room)
    await service.node.add_members(room, _users_to_add(await read_json(request)))
    return web.json_response(await service.room_summary(room))


def _users_to_add(body: dict[str, Any]) -> list[UserId]:
    """`{user_id}` or `{user_ids: [...]}`: up to MAX_ADD_TARGETS distinct users, added by one
    MEMBERSHIP event (SPEC §12.1.1, §30.5)."""
    if "user_ids" not in body:
        return [decode_user(body.get("user_id"), "user_id")]
    raw = body["user_ids"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ADD_TARGETS:
        raise MalformedMessage(f"user_ids is a list of 1 to {MAX_ADD_TARGETS} user ids")
    users = [decode_user(u, "user_ids") for u in raw]
    if len(set(users)) != len(users):
        raise MalformedMessage("user_ids names a user twice")
    return users


async def join_group(request: web.Request) -> web.Response:
    service = _service(request)
    room = _room(request, request.match_info["id"])
    if await service.node.room_state(room) is None:
        raise NotFound("no such group known here (an admin must add you or share it first)")
    await service.node.join(room)
    return web.json_response(await service.room_summary(room))


async def leave_group(request: web.Request) -> web.Response:
    service = _service(request)
    room = _room(request, request.match_info["id"])
    await service.require_room(room)
    await service.node.leave(room)
    return web.json_response({"id": room.hex(), "left": True})


async def conversation_digest(request: web.Request) -> web.Response:
    service = _service(request)
    room = _room(request, request.match_info["id"])
    await service.require_room(room)
    digest, count = await service.node.history_digest(room)
    return web.json_response({"id": room.hex(), "digest": digest.hex(), "events": count})


# --- devices ----------------------------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    node = _service(request).node
    devices = [
        {
            "device_id": device_id_text(cert.device),
            "peer_id": home,
            "created_ms": cert.created_ms,
            "this_device": cert.device == node.keyring.device_id,
        }
        for cert, home in node.devices()
    ]
    return web.json_response({"devices": devices, "primary": node.keyring.is_primary})


async def create_link_code(request: web.Request) -> web.Response:
    node = _service(request).node
    if not node.keyring.is_primary:
        raise NotAuthorized("only the primary device links new devices")
    code = node.create_link_code()
    text = encode_link_code(code)
    return web.json_response(
        {
            "code": text,
            "short_code": short_code(code),
            "expires_ms": code.expires_ms,
            "qr": qr_data_uri(text),  # the web client shows it; the CLI draws its own
        },
        status=201,
    )


async def revoke_device(request: web.Request) -> web.Response:
    node = _service(request).node
    device = decode_device_id(request.match_info["device_id"])
    await node.revoke_device(device)
    return web.json_response({"device_id": device_id_text(device), "revoked": True})


# --- users ------------------------------------------------------------------------------------


async def get_own_profile(request: web.Request) -> web.Response:
    service = _service(request)
    return web.json_response(await service.profile(service.own))


async def put_own_profile(request: web.Request) -> web.Response:
    """Change our profile; it goes to contacts and co-members (SPEC §32.1)."""
    service = _service(request)
    body = await read_json(request)
    update: ProfileUpdate = {}
    if (avatar_text := body.get("profile_pic")) is not None:
        update["picture"] = await service.node.social.picture(
            decode_hex_id(avatar_text, "profile_pic")
        )
    for name, max_bytes in (("handle", 64), ("display_name", 128), ("bio", 1024)):
        if name in body:
            update[name] = _text(body, name, max_bytes)
    if "\x00" in str(update.get("handle", "")):  # it keys the handle index (storage/keys.py)
        raise MalformedMessage("a handle never contains NUL")
    await service.node.social.set_profile(update)
    return web.json_response(await service.profile(service.own))


async def get_user(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    return web.json_response(await _service(request).profile(user))


# --- media ------------------------------------------------------------------------------------


async def upload_media(request: web.Request) -> web.Response:
    service = _service(request)
    limit = service.config.max_media_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"media over {limit} bytes")
    # One read() returns what has arrived so far, not the whole body: read up to EOF.
    parts: list[bytes] = []
    size = 0
    async for part in request.content.iter_chunked(_UPLOAD_READ_BYTES):
        size += len(part)
        if size > limit:
            raise TooLarge(f"media over {limit} bytes")
        parts.append(part)
    data = b"".join(parts)
    if not data:
        raise MalformedMessage("empty upload")
    content_type = check_media_type(
        request.headers.get("Content-Type", "application/octet-stream"), "Content-Type"
    )
    store = service.node.store
    info = await store.run_long(  # sealed here: no holder of the blob reads it (SPEC §28.2)
        put_sealed, store.store, data, content_type=content_type, now_ms=service.clock.now_ms()
    )
    return web.json_response(
        {"digest": info.digest.hex(), "size": len(data), "content_type": info.content_type},
        status=201,
    )


async def download_media(request: web.Request) -> web.Response:
    """The blob, opened (SPEC §28.3); one a message here references but not yet fetched is
    waited for (SPEC §25.5)."""
    digest = decode_hex_id(request.match_info["digest"], "digest")
    service = _service(request)
    store = service.node.store
    if await store.read(store.store.media_info, digest) is None and not (
        await service.node.media.wait_fetched(digest, wait_s=service.config.media_fetch_wait_s)
    ):
        raise ApiError(504, ErrorCode.NOT_FOUND, "not fetched from the sender's home yet")
    opened = await store.read(read_opened, store.store, digest)
    if opened is None:
        raise NotFound("no such media here")
    info, data = opened
    # The content type is the sender's word: never let a browser run it on our origin.
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    try:
        content_type = check_media_type(info.content_type).split(";")[0]
    except MalformedMessage:  # stored before types were checked where they enter
        content_type = "application/octet-stream"
    if not content_type.startswith(_INLINE_MEDIA):
        headers["Content-Disposition"] = "attachment"
    return web.Response(body=data, content_type=content_type or None, headers=headers)


# --- push -------------------------------------------------------------------------------------


async def vapid_key(request: web.Request) -> web.Response:
    service = _service(request)
    store = service.node.store
    key = await store.run(load_vapid_key, store)
    return web.json_response({"public_key": key.public_key})


async def list_push(request: web.Request) -> web.Response:
    service = _service(request)
    store = service.node.store
    subscriptions = await store.read(store.store.push_subscriptions, service.own)
    items = []
    for s in subscriptions:
        target = decode_target(s.data)
        items.append(
            {
                "id": s.subscription_id.hex(),
                "kind": target.kind,
                "endpoint": target.endpoint,
                "created_ms": s.created_ms,
            }
        )
    return web.json_response({"subscriptions": items})


async def add_push(request: web.Request) -> web.Response:
    service = _service(request)
    target = parse_target(await read_json(request))
    store = service.node.store
    subscription = PushSubscription(
        user=service.own,
        subscription_id=new_subscription_id(),
        data=encode_target(target),
        created_ms=service.clock.now_ms(),
    )
    # The count and the write in one transaction: concurrent adds cannot pass the cap together.
    if not await store.run(store.store.add_push_subscription, subscription, MAX_PUSH_SUBSCRIPTIONS):
        raise ApiError(
            409, ErrorCode.QUOTA_EXCEEDED, f"at most {MAX_PUSH_SUBSCRIPTIONS} push subscriptions"
        )
    return web.json_response({"id": subscription.subscription_id.hex()}, status=201)


async def delete_push(request: web.Request) -> web.Response:
    service = _service(request)
    text = request.match_info["id"]
    if len(text) != 32:
        raise InvalidIdentifier("a subscription id is 32 hex digits")
    try:
        subscription_id = bytes.fromhex(text)
    except ValueError:
        raise InvalidIdentifier("a subscription id is 32 hex digits") from None
    store = service.node.store
    if not await store.run(store.store.delete_push_subscription, service.own, subscription_id):
        raise NotFound("no such push subscription")
    return web.json_response({"id": text, "deleted": True})


ROUTES: Final = (
    ("GET", "/openapi.json", openapi),
    ("GET", "/v1/node/status", node_status),
    ("POST", "/v1/peers", connect_peer),
    ("GET", "/v1/conversation", list_conversations),
    ("POST", "/v1/conversation", create_conversation),
    ("DELETE", "/v1/conversation", delete_conversation),
    ("GET", "/v1/conversation/{id}/details", conversation_details),
    ("POST", "/v1/conversation/{id}/messages", send_message),
    ("GET", "/v1/conversation/{id}/digest", conversation_digest),
    ("GET", "/v1/devices", list_devices),
    ("POST", "/v1/devices/link", create_link_code),
    ("DELETE", "/v1/devices/{device_id:d[a-z2-7]+}", revoke_device),  # not /v1/devices/link
    ("GET", "/v1/friends", list_friends),
    ("GET", "/v1/friends/requests", list_friend_requests),
    ("POST", "/v1/friends/requests", send_friend_request),
    ("GET", "/v1/friends/invite", friend_invite),
    ("POST", "/v1/friends/requests/{user_id}/accept", accept_friend_request),
    ("POST", "/v1/friends/requests/{user_id}/decline", decline_friend_request),
    ("DELETE", "/v1/friends/requests/{user_id}", cancel_friend_request),
    ("GET", "/v1/groups", list_groups),
    ("POST", "/v1/groups", create_group),
    ("POST", "/v1/groups/{id}/members", add_group_member),
    ("POST", "/v1/groups/{id}/join", join_group),
    ("POST", "/v1/groups/{id}/leave", leave_group),
    ("GET", "/v1/profile", get_own_profile),
    ("PUT", "/v1/profile", put_own_profile),
    ("GET", "/v1/users/{user_id}", get_user),
    ("POST", "/v1/media", upload_media),
    ("GET", "/v1/media/{digest}", download_media),
    ("GET", "/v1/push/vapid", vapid_key),
    ("GET", "/v1/push/subscriptions", list_push),
    ("POST", "/v1/push/subscriptions", add_push),
    ("DELETE", "/v1/push/subscriptions/{id}", delete_push),
    ("GET", "/v1/ws", websocket_handler),
    *GROUP_ROUTES,
    *CLIENT_ROUTES,
    *VERIFY_ROUTES,
    *ACTION_ROUTES,
    *SOCIAL_ROUTES,
)
"""Every route: (method, path, handler). The OpenAPI test checks each is documented."""


def documented_path(path: str) -> str:
    """A route's path as the OpenAPI document names it: `{name:regex}` is `{name}`."""
    return re.sub(r"\{(\w+):[^/]+\}", r"{\1}", path)


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
