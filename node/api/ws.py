"""WebSocket `/v1/ws` (SPEC §15.4): JSON event frames both ways.

A connection starts with a `ready` frame; a client that passes `?cursor=` first gets every
durable event after it (or `resync` when the cursor cannot be answered exactly), then the live
stream. Sends run concurrently (so their appends share group commits), each sealed in the order
of its frame among the connection's sends of a room, and each is answered by `message_sent`
once durable, or by `error` with the same `client_id`. A bad frame is answered by `error` and
changes nothing; the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from hearthmesh.node.api.errors import ApiError, error_body, error_response
from hearthmesh.node.api.feed import dumps
from hearthmesh.node.api.service import SERVICE_KEY, ApiService, ClientSession
from hearthmesh.node.rate_limit import TokenBucket
from hearthmesh.protocol.client_api import (
    MAX_CLIENT_ID_CHARS,
    Ack,
    ClientCommand,
    CreateConversation,
    DeleteForMe,
    EditMessage,
    ForwardMessage,
    GetAllGroup,
    JoinGroup,
    LeaveGroup,
    ReactToMessage,
    RecallMessage,
    Send,
    Typing,
    decode_client_frame,
    decode_json_object,
    decode_text,
)
from hearthmesh.protocol.errors import (
    ErrorCode,
    HearthError,
    NodeFailed,
    NotFound,
    RateLimited,
    TooLarge,
)
from hearthmesh.protocol.identity import user_id_text

__all__ = ["websocket_handler"]

log = logging.getLogger(__name__)

_MAX_IN_FLIGHT: Final = 4096
"""Sends of one connection awaiting their commit; the reader waits beyond this."""
_HEARTBEAT_S: Final = 30.0
_LIBRARY_MARGIN_BYTES: Final = 16 * 1024
"""aiohttp's own frame limit sits this far above ours: frames between the two get our `error`
frame on an open connection; beyond it aiohttp must stop reading (SPEC §15.4.2)."""


class _ApiWebSocket(web.WebSocketResponse):
    """A WebSocket that says why before aiohttp closes it for an oversized frame (1009)."""

    frame_limit = 0
    """Our limit (ApiConfig.max_ws_frame_bytes), named in the error."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            error = TooLarge(f"frame longer than {self.frame_limit} bytes; closing")
            with contextlib.suppress(ConnectionError):
                await self.send_str(dumps({"event": "error", **error_body(error)}))
        return await super().close(code=code, message=message, drain=drain)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Upgrade, then serve one client until it closes (auth already checked by the guard)."""
    service = request.app[SERVICE_KEY]
    config = service.config
    if not web.WebSocketResponse().can_prepare(request).ok:  # RFC 9110 §15.5.22
        raise ApiError(426, ErrorCode.MALFORMED, "this is a WebSocket: send an upgrade request")
    if len(service.sessions) >= config.max_clients:
        return error_response(RateLimited("too many open WebSocket connections"))
    if service.node.failure is not None:  # it would feed this client nothing (SPEC §11.8.5)
        return error_response(NodeFailed("the node failed; connect again once it is back"))
    # The library's own limit sits a little above ours, so an oversized frame gets a JSON error
    # from us (below) on an open connection; a far larger one gets it just before the close.
    ws = _ApiWebSocket(
        max_msg_size=config.max_ws_frame_bytes + _LIBRARY_MARGIN_BYTES, heartbeat=_HEARTBEAT_S
    )
    ws.frame_limit = config.max_ws_frame_bytes
    await ws.prepare(request)
    session = ClientSession(ws, max_queued=config.client_queue)
    # Live frames are held from here while the replay is read: nothing is missed or doubled,
    # since the feed publishes every entry after `upto` and the replay ends at it.
    service.sessions.add(session)
    upto = service.feed.position
    cursor = request.query.get("cursor")
    replay = await _replay(service, cursor, upto) if cursor else []
    ready: dict[str, Any] = {
        "event": "ready",
        "user_id": user_id_text(service.own),
        "cursor": service.feed.cursor_at(upto),
        "resumed": replay is not None and cursor is not None,
    }
    first = [dumps(ready)]
    if replay is None:
        first.append(dumps({"event": "resync", "reason": "cursor unknown or too old"}))
    session.open(first + (replay or []))
    try:
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(session.write_loop())
            await _read_loop(service, session, ws, group)
            writer.cancel()
    except* ConnectionResetError:
        log.debug("client went away while being written to")
    finally:
        service.sessions.discard(session)
        await ws.close()
    return ws


async def _read_loop(
    service: ApiService,
    session: ClientSession,
    ws: web.WebSocketResponse,
    group: asyncio.TaskGroup,
) -> None:
    config = service.config
    bucket = TokenBucket(config.ws_rate_per_s, config.ws_burst, service.clock)
    in_flight = asyncio.Semaphore(_MAX_IN_FLIGHT)
    async for message in ws:
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        data: str | bytes = message.data
        try:
            if len(data) > config.max_ws_frame_bytes:
                raise TooLarge(f"frame longer than {config.max_ws_frame_bytes} bytes")
            if not bucket.take():
                raise RateLimited("too many frames; this one was not processed")
            command = decode_client_frame(data)
        except HearthError as exc:
            session.put(dumps({"event": "error", **error_body(exc), **_echo(data)}))
            continue
        if isinstance(command, Send):
            await in_flight.acquire()
            # Its place among the room's sends (§15.4.5) is taken in the task's first step,
            # before any await (`ApiService.send`): tasks take their first steps in the order
            # they were created (the loop's ready queue), so in frame order; a task cancelled
            # before it ran took none. What a send awaits before its seal (a blob's seal read)
            # then lets no later frame's pass, and the turns held are the tasks in flight.
            task = group.create_task(_send(service, session, command))
            task.add_done_callback(lambda _: in_flight.release())
        else:
            try:
                reply = await _handle(service, command)
            except HearthError as exc:
                service.node.report_fault("api-ws", exc)
                reply = {"event": "error", **error_body(exc), **_request_id(command)}
            if reply is not None:
                session.put(dumps(reply))


async def _replay(service: ApiService, cursor: str, upto: int) -> list[str] | None:
    try:
        return await service.feed.replay(cursor, upto)
    except HearthError as exc:  # e.g. the store is closing: the client re-reads instead
        service.node.report_fault("api-ws", exc)
        log.warning("replay after %s failed: %s", cursor[:40], exc)
        return None


def _echo(data: str | bytes) -> dict[str, Any]:
    """The client_id / request_id of a refused frame, if they are valid strings; a lone
    surrogate echoed would break the writer of the connection."""
    try:
        frame = decode_json_object(data)
    except HearthError:
        return {}
    echo = {}
    for name in ("client_id", "request_id"):
        with contextlib.suppress(HearthError):
            echo[name] = decode_text(frame.get(name), name, max_chars=MAX_CLIENT_ID_CHARS)
    return echo


def _request_id(command: ClientCommand) -> dict[str, Any]:
    request_id = getattr(command, "request_id", None)
    return {} if request_id is None else {"request_id": request_id}


async def _send(service: ApiService, session: ClientSession, command: Send) -> None:
    try:
        await service.send(command, witness=session)
    except HearthError as exc:
        service.node.report_fault("api-ws", exc)
        session.put(dumps({"event": "error", **error_body(exc), "client_id": command.client_id}))


async def _handle(service: ApiService, command: ClientCommand) -> dict[str, Any] | None:
    node = service.node
    match command:
        case CreateConversation(recipient_id=user):
            created = await service.create_conversation(user)
            return {"event": "conversation_created", **created, **_request_id(command)}
        case JoinGroup(room_id=room):
            if await node.room_state(room) is None:
                raise NotFound("no such group known here (an admin must add you first)")
            await node.join(room)
            members = sorted(user_id_text(m) for m in await node.members(room))
            return {
                "event": "group_joined",
                "room_id": room.hex(),
                "members": members,
                **_request_id(command),
            }
        case LeaveGroup(room_id=room):
            await service.require_room(room)
            await node.leave(room)
            return {"event": "group_left", "room_id": room.hex(), **_request_id(command)}
        case GetAllGroup():
            return {"event": "all_group", "groups": await service.groups(), **_request_id(command)}
        case Ack(message_id=message_id, status=status):
            await service.receipts.ack(message_id, status)
            return None
        case Typing(room_id=room, active=active):
            await node.send_typing(room, active)
            return None
        case RecallMessage() | EditMessage() | ReactToMessage() | ForwardMessage() | DeleteForMe():
            done = await service.perform_action(command)
            return {"event": "message_action_done", **done, **_request_id(command)}
    return {"event": "error", "error": {"code": int(ErrorCode.MALFORMED), "message": "?"}}
