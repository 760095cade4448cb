"""Client API frames (SPEC §15): parse a client's WebSocket JSON into typed commands, sans-I/O.

Parse at the edge: a `dict` from a client never gets past `decode_client_frame`, which returns
one of the command dataclasses below or raises a `RemoteProtocolError` whose code goes back to
the client in an `error` frame; it raises nothing else, whatever the input (SPEC §15.4.2). Ids
on the API: users in their text form (SPEC §3.2), rooms and messages as 64 lowercase hex digits.

The input rules of the whole API live here, once, and the HTTP routes use them too (SPEC
§15.6): `decode_json_object` (a JSON object), `decode_text` (a string of valid Unicode within a
bound: a lone surrogate would fail later, when it is encoded for storage or a client) and
`decode_count` (a number of ASCII digits within a range).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from .actions import MAX_EDIT_BYTES, MAX_EMOJI_BYTES
from .envelope import MAX_BODY_BYTES, MessageId, RoomId
from .errors import InvalidIdentifier, MalformedMessage, TooLarge
from .identity import UserId, decode_user_id
from .media import MAX_MEDIA_BYTES
from .media_type import check_media_type
from .receipts import ReceiptStatus

__all__ = [
    "MAX_CLIENT_ID_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_GROUP_MEMBERS",
    "MAX_PAGE_NUMBER",
    "Ack",
    "ClientCommand",
    "CreateConversation",
    "DeleteForMe",
    "EditMessage",
    "ForwardMessage",
    "GetAllGroup",
    "JoinGroup",
    "LeaveGroup",
    "MediaFields",
    "MessageCommand",
    "ReactToMessage",
    "RecallMessage",
    "Send",
    "Typing",
    "decode_client_frame",
    "decode_count",
    "decode_hex_id",
    "decode_json_object",
    "decode_message_command",
    "decode_send",
    "decode_text",
    "decode_user",
]

MAX_FRAME_BYTES: Final = MAX_BODY_BYTES * 2 + 4096
"""Longest client frame: a maximal text message JSON-escaped, plus its fields."""
MAX_CLIENT_ID_CHARS: Final = 128
MAX_PAGE_NUMBER: Final = 1_000_000
"""Highest page number a list route accepts."""
MAX_GROUP_MEMBERS: Final = 64
"""Members named when a group is created (each is one membership commit; more are added with
`POST /v1/groups/{id}/members`)."""
_MESSAGE_TYPES: Final = frozenset({"text", "image", "video", "audio", "file"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateConversation:
    """Open (or find) the direct room with `recipient_id`."""

    recipient_id: UserId
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFields:
    """The `media` object of a `send` frame: a blob uploaded before (`POST /v1/media`)."""

    digest: bytes
    content_type: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Send a message; answered by `message_sent` once it is durable on this node."""

    room_id: RoomId
    message: str
    type: str
    client_id: str
    media: MediaFields | None = None
    reply_to: MessageId | None = None
    """The message this one answers; views quote it (SPEC §31.4)."""
    written_ms: int | None = None
    """When the message was written, by the client's clock (SPEC §31.6)."""
    sent_ms: int | None = None
    """When the client sent it, by the same clock; `written_ms` counts only with it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallMessage:
    """Unsend one of our user's messages (SPEC §31.1)."""

    message_id: MessageId
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EditMessage:
    """Replace the text of one of our user's messages (SPEC §31.2)."""

    message_id: MessageId
    message: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactToMessage:
    """Set (or, `active` false, remove) our user's reaction with `emoji` (SPEC §31.3)."""

    message_id: MessageId
    emoji: str
    active: bool = True
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardMessage:
    """Send a copy of a message's content to `room_id`, marked forwarded (SPEC §31.4)."""

    message_id: MessageId
    room_id: RoomId
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteForMe:
    """Hide a message on every device of our user, not from anyone else (SPEC §31.7)."""

    message_id: MessageId
    request_id: str | None = None


MessageCommand = RecallMessage | EditMessage | ReactToMessage | ForwardMessage | DeleteForMe


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinGroup:
    room_id: RoomId
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveGroup:
    room_id: RoomId
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetAllGroup:
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The client received (or showed) a message: a signed receipt goes to its sender."""

    message_id: MessageId
    status: ReceiptStatus
    """DELIVERED or READ."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing:
    room_id: RoomId
    active: bool


ClientCommand = (
    CreateConversation | Send | JoinGroup | LeaveGroup | GetAllGroup | Ack | Typing | MessageCommand
)


def decode_hex_id(text: object, what: str) -> bytes:
    """A room or message id: 64 lowercase hex digits. Raises InvalidIdentifier."""
    if not isinstance(text, str) or len(text) != 64:
        raise InvalidIdentifier(f"{what} must be 64 hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidIdentifier(f"{what} must be 64 hex digits") from None
    if raw.hex() != text:
        raise InvalidIdentifier(f"{what} must be lowercase hex")
    return raw


def decode_user(text: object, what: str = "user id") -> UserId:
    """A user id in its text form (SPEC §3.2). Raises InvalidIdentifier."""
    if not isinstance(text, str):
        raise InvalidIdentifier(f"{what} must be a user id string")
    return decode_user_id(text)


def decode_text(
    value: object, name: str, *, max_bytes: int | None = None, max_chars: int | None = None
) -> str:
    """A client's string: valid Unicode (no lone surrogate) within its bound (SPEC §15.6).

    Raises:
        MalformedMessage: not a string, or not encodable as UTF-8.
        TooLarge: over `max_chars` characters or `max_bytes` UTF-8 bytes.
    """
    if not isinstance(value, str):
        raise MalformedMessage(f"{name} must be a string")
    limit = max_chars if max_bytes is None else max_bytes  # a character is at least a byte
    if limit is not None and len(value) > limit:
        raise TooLarge(f"{name} is longer than {limit} {'bytes' if max_bytes else 'characters'}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise MalformedMessage(f"{name} is not valid Unicode (a lone surrogate)") from None
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(f"{name} is longer than {max_bytes} bytes")
    return value


def decode_count(text: str, name: str, low: int, high: int) -> int:
    """A number a client wrote in decimal: ASCII digits only, in `low..high` (SPEC §15.6).

    `str.isdigit` also accepts superscripts and Arabic-Indic digits, and `int` reads thousands
    of digits slowly or not at all, so the length is bounded by `high`'s before converting.

    Raises:
        MalformedMessage: anything else.
    """
    if not (0 < len(text) <= len(str(high)) and text.isascii() and text.isdigit()):
        raise MalformedMessage(f"{name} must be an integer in {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise MalformedMessage(f"{name} must be an integer in {low}..{high}")
    return value


def decode_json_object(data: str | bytes, what: str = "frame") -> dict[str, Any]:
    """Parse JSON text that must be an object. Raises MalformedMessage."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedMessage(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedMessage(f"{what} is a JSON object")
    return value


def _request_id(frame: dict[str, Any]) -> str | None:
    value = frame.get("request_id")
    if value is None:
        return None
    return decode_text(value, "request_id", max_chars=MAX_CLIENT_ID_CHARS)


def _media(value: object) -> MediaFields:
    if not isinstance(value, dict):
        raise MalformedMessage("media is an object {digest, content_type, size}")
    size = value.get("size")
    if isinstance(size, float) and size.is_integer():  # JSON Schema: 5.0 is an integer
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_MEDIA_BYTES:
        raise MalformedMessage(f"media.size is an integer in 0..{MAX_MEDIA_BYTES}")
    return MediaFields(
        digest=decode_hex_id(value.get("digest"), "media.digest"),
        content_type=check_media_type(value.get("content_type"), "media.content_type"),
        size=size,
    )


def decode_send(frame: dict[str, Any]) -> Send:
    """A `send` frame's fields, already parsed from JSON (the WebSocket frame, or the HTTP
    send's body with its path's room). Raises MalformedMessage, TooLarge, InvalidIdentifier."""
    message = decode_text(frame.get("message"), "message", max_bytes=MAX_BODY_BYTES)
    type_ = frame.get("type", "text")
    if not isinstance(type_, str) or type_ not in _MESSAGE_TYPES:
        raise MalformedMessage(f"type must be one of {sorted(_MESSAGE_TYPES)}")
    media = None if frame.get("media") is None else _media(frame["media"])
    if (type_ == "text") != (media is None):
        raise MalformedMessage("a text message has no media; a media message needs media")
    client_id = decode_text(frame.get("client_id"), "client_id", max_chars=MAX_CLIENT_ID_CHARS)
    if not client_id:
        raise MalformedMessage("client_id must not be empty")
    reply_to = frame.get("reply_to")
    written_ms, sent_ms = _time(frame, "written_ms"), _time(frame, "sent_ms")
    return Send(
        room_id=RoomId(decode_hex_id(frame.get("room_id"), "room_id")),
        message=message,
        type=type_,
        client_id=client_id,
        media=media,
        reply_to=None if reply_to is None else MessageId(decode_hex_id(reply_to, "reply_to")),
        written_ms=written_ms,
        sent_ms=sent_ms,
    )


_MAX_TIME_MS: Final = 2**53 - 1
"""The largest integer JSON carries exactly."""


def _time(frame: dict[str, Any], name: str) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_TIME_MS:
        raise MalformedMessage(f"{name} is an integer of ms in 0..2^53-1")
    return value


def decode_message_command(event: str, frame: dict[str, Any]) -> MessageCommand:
    """A message action's fields (SPEC §31), from a WebSocket frame or an HTTP route's body
    with its path's id. Raises MalformedMessage, TooLarge, InvalidIdentifier."""
    message_id = MessageId(decode_hex_id(frame.get("message_id"), "message_id"))
    request_id = _request_id(frame)
    match event:
        case "recall":
            return RecallMessage(message_id=message_id, request_id=request_id)
        case "edit":
            text = decode_text(frame.get("message"), "message", max_bytes=MAX_EDIT_BYTES)
            if not text:
                raise MalformedMessage("an edit's message must not be empty")
            return EditMessage(message_id=message_id, message=text, request_id=request_id)
        case "react":
            emoji = decode_text(frame.get("emoji"), "emoji", max_bytes=MAX_EMOJI_BYTES)
            if not emoji or not emoji.isprintable():
                raise MalformedMessage("emoji is printable text of 1..64 bytes")
            active = frame.get("active", True)
            if not isinstance(active, bool):
                raise MalformedMessage("active is true or false")
            return ReactToMessage(
                message_id=message_id, emoji=emoji, active=active, request_id=request_id
            )
        case "forward":
            room = RoomId(decode_hex_id(frame.get("room_id"), "room_id"))
            return ForwardMessage(message_id=message_id, room_id=room, request_id=request_id)
        case "delete_for_me":
            return DeleteForMe(message_id=message_id, request_id=request_id)
    raise MalformedMessage(f"unknown message action {event[:40]!r}")


def _ack(frame: dict[str, Any]) -> Ack:
    statuses = {"delivered": ReceiptStatus.DELIVERED, "read": ReceiptStatus.READ}
    status = frame.get("status")
    if not isinstance(status, str) or status not in statuses:
        raise MalformedMessage("ack status is 'delivered' or 'read'")
    return Ack(
        message_id=MessageId(decode_hex_id(frame.get("message_id"), "message_id")),
        status=statuses[status],
    )


def _typing(frame: dict[str, Any]) -> Typing:
    active = frame.get("active", True)
    if not isinstance(active, bool):
        raise MalformedMessage("active is true or false")
    return Typing(room_id=RoomId(decode_hex_id(frame.get("room_id"), "room_id")), active=active)


def decode_client_frame(data: str | bytes) -> ClientCommand:
    """Parse one client frame (JSON text).

    Raises:
        TooLarge: longer than MAX_FRAME_BYTES (checked before parsing).
        MalformedMessage: not a JSON object, an unknown `event`, a missing or mistyped field.
        InvalidIdentifier: a user, room or message id with a wrong encoding.
    """
    if len(data) > MAX_FRAME_BYTES:
        raise TooLarge(f"frame longer than {MAX_FRAME_BYTES} bytes")
    frame = decode_json_object(data)
    match frame.get("event"):
        case "create_conversation":
            return CreateConversation(
                recipient_id=decode_user(frame.get("recipient_id"), "recipient_id"),
                request_id=_request_id(frame),
            )
        case "send":
            return decode_send(frame)
        case "join_group":
            return JoinGroup(
                room_id=RoomId(decode_hex_id(frame.get("room_id"), "room_id")),
                request_id=_request_id(frame),
            )
        case "leave_group":
            return LeaveGroup(
                room_id=RoomId(decode_hex_id(frame.get("room_id"), "room_id")),
                request_id=_request_id(frame),
            )
        case "get_all_group":
            return GetAllGroup(request_id=_request_id(frame))
        case "ack":
            return _ack(frame)
        case "typing":
            return _typing(frame)
        case "recall" | "edit" | "react" | "forward" | "delete_for_me" as event:
            return decode_message_command(event, frame)
        case str() as other:
            raise MalformedMessage(f"unknown event {other[:40]!r}")
    raise MalformedMessage("frame needs an 'event' string")
