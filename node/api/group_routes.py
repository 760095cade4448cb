"""Client routes that run a group and join one by invite (SPEC §30.5).

Members are listed with their roles a page at a time; kick, ban, unban, role changes and the
group's name, topic and avatar go through `Node.groups`, whose refusals carry their SPEC §30
code (403 for a role or a ban, 409 for a change that does not fit the group's state). Invites
are shown once with their link, code and QR; later only by id, issuer, uses and expiry, as the
group's events fold them at this home (SPEC §30.3). PATCH also sets what new members are given
(SPEC §30.6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.api.pairing import qr_data_uri
from hearthmesh.node.api.service import SERVICE_KEY, ApiService
from hearthmesh.node.api.views import ROLE_NAMES
from hearthmesh.node.rooms.groups import GroupService
from hearthmesh.protocol.client_api import (
    MAX_PAGE_NUMBER,
    decode_count,
    decode_hex_id,
    decode_text,
    decode_user,
)
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode, InvalidIdentifier, MalformedMessage
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.protocol.invites import (
    INVITE_ID_BYTES,
    INVITE_LINK_PREFIX,
    MAX_INVITE_CODE_CHARS,
    MAX_INVITE_TTL_MS,
    InviteRecord,
)
from hearthmesh.protocol.membership import (
    HISTORY_JOINED,
    HISTORY_SHARED,
    MAX_GROUP_NAME_BYTES,
    MAX_GROUP_SIZE,
    MAX_SHARED_HISTORY,
    RoomState,
)

__all__ = ["GROUP_ROUTES", "JOIN_TIMEOUT_S", "MAX_INVITE_TTL_S", "MAX_INVITE_USES"]

JOIN_TIMEOUT_S: Final = 20.0
"""How long a join by invite may take: reaching an admin's home, its answer, and the group's
membership history arriving here."""
MAX_INVITE_TTL_S: Final = MAX_INVITE_TTL_MS // 1000
MAX_INVITE_USES: Final = MAX_GROUP_SIZE
DEFAULT_INVITE_TTL_S: Final = 7 * 86_400
DEFAULT_SHARED_HISTORY: Final = 50
"""Messages a `shared` group gives a new member when the client names no limit."""
_ROLES_BY_NAME: Final = {name: role for role, name in ROLE_NAMES.items()}


def _service(request: web.Request) -> ApiService:
    return request.app[SERVICE_KEY]


def _groups(request: web.Request) -> GroupService:
    return _service(request).node.groups


def _room(request: web.Request) -> RoomId:
    return RoomId(decode_hex_id(request.match_info["id"], "group id"))


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name)
    return default if text is None else decode_count(text, name, 1, high)


def _int_field(body: dict[str, Any], name: str, default: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, float) and value.is_integer():  # 212.0 is an integer in JSON Schema
        value = int(value)
    if type(value) is not int or not 1 <= value <= high:
        raise MalformedMessage(f"{name} is an integer from 1 to {high}")
    return value


def invite_view(record: InviteRecord) -> dict[str, Any]:
    return {
        "invite_id": record.invite_id.hex(),
        "issuer": user_id_text(record.issuer),
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
        "max_uses": record.max_uses,
        "uses": record.uses,
        "revoked": record.revoked,
    }


def members_view(state: RoomState, page_size: int, page_number: int) -> dict[str, Any]:
    """One page of members, owners first, then admins, then members (each by id)."""
    ordered = sorted(state.members.items(), key=lambda item: (-item[1], item[0]))
    start = (page_number - 1) * page_size
    page = ordered[start : start + page_size]
    return {
        "id": state.room.hex(),
        "members": [{"user_id": user_id_text(u), "role": ROLE_NAMES[r]} for u, r in page],
        "banned": sorted(user_id_text(u) for u in state.banned),
        "member_count": len(ordered),
        "page_size": page_size,
        "page_number": page_number,
        "has_more": start + page_size < len(ordered),
    }


async def list_members(request: web.Request) -> web.Response:
    state = await _groups(request).state(_room(request))
    await _service(request).require_room(state.room)
    page_size = _int_query(request, "page_size", 100, MAX_GROUP_SIZE)
    page_number = _int_query(request, "page_number", 1, MAX_PAGE_NUMBER)
    return web.json_response(members_view(state, page_size, page_number))


_MemberAction = Callable[[GroupService, RoomId, UserId], Awaitable[object]]


async def _member_action(request: web.Request, action: _MemberAction) -> web.Response:
    room = _room(request)
    user = decode_user((await read_json(request)).get("user_id"), "user_id")
    await action(_groups(request), room, user)
    return web.json_response(await _service(request).room_summary(room))


async def kick_member(request: web.Request) -> web.Response:
    return await _member_action(request, GroupService.kick)


async def ban_member(request: web.Request) -> web.Response:
    return await _member_action(request, GroupService.ban)


async def unban_member(request: web.Request) -> web.Response:
    return await _member_action(request, GroupService.unban)


async def set_role(request: web.Request) -> web.Response:
    room = _room(request)
    body = await read_json(request)
    user = decode_user(body.get("user_id"), "user_id")
    name = body.get("role")
    if not isinstance(name, str) or name not in _ROLES_BY_NAME:
        raise MalformedMessage(f"role is one of {', '.join(_ROLES_BY_NAME)}")
    await _groups(request).set_role(room, user, _ROLES_BY_NAME[name])
    return web.json_response(await _service(request).room_summary(room))


async def change_group(request: web.Request) -> web.Response:
    """PATCH: any of name, topic, avatar (a media digest, or null for none), history (`joined`
    or `shared`, with `history_limit`, SPEC §30.6); all are parsed before any is sent."""
    room = _room(request)
    body = await read_json(request)
    if not {"name", "topic", "avatar", "history"} & body.keys():
        raise MalformedMessage("change at least one of name, topic, avatar, history")
    history = body.get("history")
    if "history" in body and history not in (HISTORY_JOINED, HISTORY_SHARED):
        raise MalformedMessage("history is joined or shared")
    if "history_limit" in body and "history" not in body:
        raise MalformedMessage("history_limit goes with history")
    limit = _int_field(body, "history_limit", DEFAULT_SHARED_HISTORY, MAX_SHARED_HISTORY)
    name, topic = (
        None if key not in body else decode_text(body[key], key, max_bytes=MAX_GROUP_NAME_BYTES)
        for key in ("name", "topic")
    )
    avatar = body.get("avatar", b"")
    digest = (
        None if "avatar" not in body else b"" if avatar is None else decode_hex_id(avatar, "avatar")
    )
    groups = _groups(request)
    if name is not None:
        await groups.rename(room, name)
    if topic is not None:
        await groups.set_topic(room, topic)
    if digest is not None:
        await groups.set_avatar(room, digest)
    if history is not None:
        await groups.set_history(room, history, limit if history == HISTORY_SHARED else 0)
    return web.json_response(await _service(request).room_summary(room))


async def create_invite(request: web.Request) -> web.Response:
    room = _room(request)
    body = await read_json(request)
    ttl_s = _int_field(body, "ttl_s", DEFAULT_INVITE_TTL_S, MAX_INVITE_TTL_S)
    max_uses = _int_field(body, "max_uses", 1, MAX_INVITE_USES)
    link, record = await _groups(request).create_invite(
        room, ttl_ms=ttl_s * 1000, max_uses=max_uses
    )
    view = {
        **invite_view(record),
        "link": link,
        "code": link.removeprefix(INVITE_LINK_PREFIX),
        "qr": qr_data_uri(link),
    }
    return web.json_response(view, status=201)


async def list_invites(request: web.Request) -> web.Response:
    records = await _groups(request).held_invites(_room(request))
    return web.json_response({"invites": [invite_view(r) for r in records]})


async def revoke_invite(request: web.Request) -> web.Response:
    text = request.match_info["invite_id"]
    try:
        invite_id = bytes.fromhex(text)
    except ValueError:
        invite_id = b""
    if len(invite_id) != INVITE_ID_BYTES:
        raise InvalidIdentifier(f"an invite id is {2 * INVITE_ID_BYTES} hex digits")
    await _groups(request).revoke_invite(_room(request), invite_id)
    return web.json_response({"invite_id": text, "revoked": True})


async def join_by_invite(request: web.Request) -> web.Response:
    body = await read_json(request)
    link = decode_text(body.get("link"), "link", max_bytes=MAX_INVITE_CODE_CHARS)
    try:
        async with asyncio.timeout(JOIN_TIMEOUT_S):
            room = await _groups(request).join_by_invite(link)
    except TimeoutError:
        raise ApiError(
            504, ErrorCode.BUSY, "no admin home let us in, or the group's history is late"
        ) from None
    return web.json_response(await _service(request).room_summary(room))


GROUP_ROUTES: Final = (
    ("POST", "/v1/groups/join", join_by_invite),
    ("PATCH", "/v1/groups/{id:[0-9a-f]+}", change_group),  # not /v1/groups/join
    ("GET", "/v1/groups/{id}/members", list_members),
    ("POST", "/v1/groups/{id}/kick", kick_member),
    ("POST", "/v1/groups/{id}/ban", ban_member),
    ("POST", "/v1/groups/{id}/unban", unban_member),
    ("POST", "/v1/groups/{id}/role", set_role),
    ("GET", "/v1/groups/{id}/invites", list_invites),
    ("POST", "/v1/groups/{id}/invites", create_invite),
    ("DELETE", "/v1/groups/{id}/invites/{invite_id}", revoke_invite),
)
"""Routes of SPEC §30.5 (part of `http_routes.ROUTES`)."""
