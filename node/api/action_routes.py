"""HTTP routes of message actions (SPEC §31.8): recall, edit, react, forward, delete for me,
one message's view, and marking a conversation read.

Each route's body is the WebSocket event's fields with the path's message id, decoded by the
same `decode_message_command`; the answer is the WebSocket answer's fields.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.service import SERVICE_KEY, ApiService
from hearthmesh.protocol.client_api import decode_hex_id, decode_message_command
from hearthmesh.protocol.content import is_user_content
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import NotFound
from hearthmesh.protocol.receipts import ReceiptStatus

__all__ = ["ACTION_ROUTES"]

_MAX_BODY_BYTES: Final = 64 * 1024
_READ_SCAN: Final = 50
"""Events looked at, newest first, for the message a `read` marks."""


def _service(request: web.Request) -> ApiService:
    return request.app[SERVICE_KEY]


async def _perform(request: web.Request, event: str, body: dict[str, Any]) -> web.Response:
    frame = {**body, "message_id": request.match_info["message_id"]}
    command = decode_message_command(event, frame)
    answer = await _service(request).perform_action(command)
    return web.json_response(answer, status=200 if event == "delete_for_me" else 201)


async def recall_message(request: web.Request) -> web.Response:
    return await _perform(request, "recall", {})


async def edit_message(request: web.Request) -> web.Response:
    return await _perform(request, "edit", await read_json(request, max_bytes=_MAX_BODY_BYTES))


async def react_to_message(request: web.Request) -> web.Response:
    return await _perform(request, "react", await read_json(request, max_bytes=_MAX_BODY_BYTES))


async def forward_message(request: web.Request) -> web.Response:
    return await _perform(request, "forward", await read_json(request, max_bytes=_MAX_BODY_BYTES))


async def delete_for_me(request: web.Request) -> web.Response:
    return await _perform(request, "delete_for_me", {})


async def get_message(request: web.Request) -> web.Response:
    message_id = MessageId(decode_hex_id(request.match_info["message_id"], "message id"))
    return web.json_response(await _service(request).actions.message(message_id))


async def mark_read(request: web.Request) -> web.Response:
    """Read receipts up to the newest message of another user (SPEC §16): `hearthmesh read`."""
    service = _service(request)
    room = RoomId(decode_hex_id(request.match_info["id"], "conversation id"))
    await service.require_room(room)
    page = await service.node.history(room, limit=_READ_SCAN)
    for stored in reversed(page.events):
        envelope = stored.envelope
        if is_user_content(envelope) and envelope.sender_user != service.own:
            await service.receipts.ack(envelope.message_id, ReceiptStatus.READ)
            return web.json_response({"id": room.hex(), "read": envelope.message_id.hex()})
    raise NotFound("no message of another user to mark read")


_MESSAGE: Final = "/v1/messages/{message_id}"

ACTION_ROUTES: Final = (
    ("GET", _MESSAGE, get_message),
    ("DELETE", _MESSAGE, delete_for_me),
    ("POST", _MESSAGE + "/recall", recall_message),
    ("POST", _MESSAGE + "/edit", edit_message),
    ("POST", _MESSAGE + "/reactions", react_to_message),
    ("POST", _MESSAGE + "/forward", forward_message),
    ("POST", "/v1/conversation/{id}/read", mark_read),
)
"""(method, path, handler) of the message actions."""
