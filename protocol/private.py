"""Private state of one user, shared by their own devices only (SPEC §22.6).

Some changes concern one user alone — a conversation deleted from their list — yet must reach
every device of that user. They travel as PRIVATE envelopes in the user's self room, a room
whose only member is the user: they go to the user's other homes and to no one else, and sync
between homes repairs them like any history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .envelope import MessageId, RoomId
from .errors import MalformedMessage
from .identity import UserId

__all__ = [
    "PRIVATE_CONTENT_TYPE",
    "SELF_ROOM_DOMAIN",
    "BlockChanged",
    "ConversationDeleted",
    "MessageHidden",
    "PrivateAction",
    "PrivateChange",
    "decode_private",
    "encode_block_changed",
    "encode_conversation_deleted",
    "encode_message_hidden",
    "self_room_id",
]

SELF_ROOM_DOMAIN: Final = b"hearthmesh/self-room/v0\x00"
PRIVATE_CONTENT_TYPE: Final = "application/x-hearthmesh-private"
_MAX_BODY_BYTES: Final = 256


def self_room_id(user: UserId) -> RoomId:
    """SHA-256(domain | user): the room of a user's private state."""
    return RoomId(hashlib.sha256(SELF_ROOM_DOMAIN + user).digest())


class PrivateAction(IntEnum):
    """What a PRIVATE envelope does. Values are never renumbered."""

    CONVERSATION_DELETED = 1
    BLOCK_CHANGED = 2
    MESSAGE_HIDDEN = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationDeleted:
    """The user removed `room` from their conversation list (history stays)."""

    room: RoomId


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageHidden:
    """The user deleted `message` of `room` for themselves: "delete for me" (SPEC §31.7)."""

    room: RoomId
    message: MessageId


def encode_message_hidden(room: RoomId, message: MessageId) -> bytes:
    """CBOR [3, room, message]."""
    return encode_canonical([int(PrivateAction.MESSAGE_HIDDEN), room, message])


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockChanged:
    """The user blocked or unblocked `user` (SPEC §32.3): every home of theirs applies it."""

    user: UserId
    blocked: bool


PrivateChange = ConversationDeleted | BlockChanged | MessageHidden


def encode_block_changed(user: UserId, *, blocked: bool) -> bytes:
    """CBOR [2, user, blocked (0/1)]."""
    return encode_canonical([int(PrivateAction.BLOCK_CHANGED), user, int(blocked)])


def encode_conversation_deleted(room: RoomId) -> bytes:
    """CBOR [1, room]."""
    return encode_canonical([int(PrivateAction.CONVERSATION_DELETED), room])


def decode_private(body: bytes) -> PrivateChange:
    """Parse a PRIVATE body. Raises MalformedMessage or TooLarge."""
    match decode_canonical(body, max_bytes=_MAX_BODY_BYTES):
        case [1, bytes() as room] if len(room) == 32:
            return ConversationDeleted(room=RoomId(room))
        case [2, bytes() as user, int() as blocked] if len(user) == 32 and blocked in (0, 1):
            return BlockChanged(user=UserId(user), blocked=bool(blocked))
        case [3, bytes() as room, bytes() as message] if len(room) == len(message) == 32:
            return MessageHidden(room=RoomId(room), message=MessageId(message))
    raise MalformedMessage("not a private-state body")
