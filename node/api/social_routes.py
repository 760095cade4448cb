"""Client routes of blocking, presence visibility and message requests (SPEC §32.3-§32.5).

The profile and friend routes stay in http_routes.py; what they gained here is in `Social`.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.service import SERVICE_KEY, ApiService
from hearthmesh.node.social.privacy import Visibility
from hearthmesh.protocol.client_api import decode_hex_id, decode_text, decode_user
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import MalformedMessage, NotFound
from hearthmesh.protocol.identity import user_id_text

__all__ = ["SOCIAL_ROUTES"]


def _service(request: web.Request) -> ApiService:
    return request.app[SERVICE_KEY]


async def list_blocked(request: web.Request) -> web.Response:
    service = _service(request)
    blocked = service.node.social.privacy.blocked()
    return web.json_response({"blocked": [await service.profile(user) for user in blocked]})


async def block_user(request: web.Request) -> web.Response:
    """Block a user on every home of ours: what they send is acked and dropped (SPEC §32.3)."""
    user = decode_user(request.match_info["user_id"])
    service = _service(request)
    if user == service.own:
        raise MalformedMessage("a user cannot block themselves")
    await service.node.social.block(user)
    return web.json_response({"user_id": user_id_text(user), "blocked": True})


async def unblock_user(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    if not await _service(request).node.social.block(user, blocked=False):
        raise NotFound(f"{user_id_text(user)} is not blocked")
    return web.json_response({"user_id": user_id_text(user), "blocked": False})


async def get_privacy(request: web.Request) -> web.Response:
    visibility = _service(request).node.social.privacy.visibility
    return web.json_response({"presence": visibility.value})


async def put_privacy(request: web.Request) -> web.Response:
    """Who sees our presence, last seen and typing: contacts or nobody (SPEC §32.4)."""
    body = await read_json(request)
    text = decode_text(body.get("presence"), "presence", max_bytes=16)
    if text not in {v.value for v in Visibility}:
        raise MalformedMessage("presence is 'contacts' or 'nobody'")
    await _service(request).node.social.set_visibility(Visibility(text))
    return web.json_response({"presence": text})


async def accept_message_request(request: web.Request) -> web.Response:
    """Move a message request into the conversation list (SPEC §32.5)."""
    service = _service(request)
    room = RoomId(decode_hex_id(request.match_info["id"], "conversation id"))
    await service.require_room(room)
    await service.node.social.accept_request(room)
    return web.json_response({"id": room.hex(), "request": False})


SOCIAL_ROUTES: Final = (
    ("GET", "/v1/friends/blocked", list_blocked),
    ("PUT", "/v1/friends/blocked/{user_id}", block_user),
    ("DELETE", "/v1/friends/blocked/{user_id}", unblock_user),
    ("GET", "/v1/privacy", get_privacy),
    ("PUT", "/v1/privacy", put_privacy),
    ("POST", "/v1/conversation/{id}/accept", accept_message_request),
)
"""(method, path, handler) of SPEC §32's routes."""
