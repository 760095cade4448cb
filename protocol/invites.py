"""Group invites and joining by one (SPEC §30.3, §30.4). Owns no state.

An invite is a secret an admin issues for one group. Its text (the code, or the link
`hearthmesh:join/<code>`) carries everything a joiner needs: the room id, the secret, and the
addresses of admin homes. The group holds only the secret's digest (`invite_id`), in an INVITE
event every member's home folds into an `InviteRecord` (`invite_record`), so any admin's home
judges the invite the same way; `check_invite` is the one rule over such a record. The joiner
asks on `/hearthmesh/join/0`: one REQUEST
`[1, room, secret, home record]` per stream, answered `[2, add message id]` or an ERROR frame
`[3, code, message]` (SPEC §11.1). The home record names the joiner and their homes; it must
list the peer that asks, so no one joins anyone else.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .delivery import ProtocolErrorFrame
from .envelope import MessageId, RoomId
from .errors import InvalidIdentifier, InviteInvalid, MalformedMessage, NotFound, RoleRequired
from .home_record import MAX_HOME_RECORD_BYTES, HomeRecord
from .identity import KEY_BYTES, UserId
from .invite_record import (
    INVITE_ID_BYTES,
    MAX_INVITE_TTL_MS,
    MAX_INVITES_PER_GROUP,
    InviteRecord,
    check_invite,
    invite_id,
)
from .membership import Role, RoomState

__all__ = [
    "INVITE_ID_BYTES",
    "INVITE_LINK_PREFIX",
    "INVITE_SECRET_BYTES",
    "JOIN_PROTOCOL",
    "MAX_INVITES_PER_GROUP",
    "MAX_INVITE_ADDRS",
    "MAX_INVITE_CODE_CHARS",
    "MAX_INVITE_TTL_MS",
    "MAX_JOIN_FRAME_BYTES",
    "Invite",
    "InviteRecord",
    "JoinRequest",
    "check_invite",
    "check_joiner",
    "decode_invite",
    "decode_join_answer",
    "decode_join_request",
    "encode_invite",
    "encode_join_answer",
    "encode_join_request",
    "invite_id",
    "may_invite",
]

JOIN_PROTOCOL: Final = "/hearthmesh/join/0"
INVITE_LINK_PREFIX: Final = "hearthmesh:join/"
INVITE_SECRET_BYTES: Final = 16
MAX_INVITE_ADDRS: Final = 8
"""Addresses of admin homes an invite names (each with /p2p/<peer id>)."""
MAX_JOIN_FRAME_BYTES: Final = MAX_HOME_RECORD_BYTES + 256
"""A REQUEST is a home record (at most 8 KiB) and 70 bytes more."""
_MAX_ADDR_CHARS: Final = 256
MAX_INVITE_CODE_CHARS: Final = 4096
"""An invite's text, link or code (8 addresses fit in about 1,500)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite:
    """What an invite's text carries."""

    room: RoomId
    secret: bytes
    addrs: tuple[str, ...]
    """Multiaddrs (with /p2p/) of the admin homes that hold the invite."""


def encode_invite(invite: Invite) -> str:
    """The link: `hearthmesh:join/` + lowercase base32 (no padding) of CBOR
    [room, secret, [addr, ...]]; the part after the prefix is the code."""
    raw = encode_canonical([invite.room, invite.secret, list(invite.addrs)])
    return INVITE_LINK_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_invite(text: str) -> Invite:
    """Parse an invite link or its code. Raises InvalidIdentifier (never more)."""
    body = text.strip()
    body = body.removeprefix(INVITE_LINK_PREFIX)
    if not body or len(body) > MAX_INVITE_CODE_CHARS:
        raise InvalidIdentifier("not a hearthmesh invite")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        value = decode_canonical(raw, max_bytes=MAX_INVITE_CODE_CHARS)
    except (binascii.Error, ValueError, MalformedMessage):
        raise InvalidIdentifier("the invite is damaged") from None
    match value:
        case [bytes() as room, bytes() as secret, list() as addrs] if (
            len(room) == KEY_BYTES
            and len(secret) == INVITE_SECRET_BYTES
            and 0 < len(addrs) <= MAX_INVITE_ADDRS
            and all(
                isinstance(a, str) and "/p2p/" in a and len(a) <= _MAX_ADDR_CHARS for a in addrs
            )
        ):
            return Invite(room=RoomId(room), secret=secret, addrs=tuple(str(a) for a in addrs))
    raise InvalidIdentifier("the invite is damaged")


def may_invite(state: RoomState | None, user: UserId) -> None:
    """An admin or owner of a group issues and revokes its invites (SPEC §30.3).

    Raises:
        NotFound: not a group known here.
        RoleRequired: `user` is not an admin of it.
    """
    if state is None or state.direct or not state.created:
        raise NotFound("no such group here")
    if state.rank(user) < Role.ADMIN:
        raise RoleRequired("only an admin invites")


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest:
    """A joiner's REQUEST: the invite's room and secret, and the joiner's home record."""

    room: RoomId
    secret: bytes
    home_record: bytes


def encode_join_request(request: JoinRequest) -> bytes:
    """[1, room, secret, home record]."""
    return encode_canonical([1, request.room, request.secret, request.home_record])


def decode_join_request(data: bytes) -> JoinRequest:
    """Parse a REQUEST (the home record is checked by `check_joiner`).

    Raises:
        TooLarge: past MAX_JOIN_FRAME_BYTES.
        MalformedMessage: anything else that is not [1, room, secret, record].
    """
    match decode_canonical(data, max_bytes=MAX_JOIN_FRAME_BYTES):
        case [1, bytes() as room, bytes() as secret, bytes() as record] if (
            len(room) == KEY_BYTES and len(secret) == INVITE_SECRET_BYTES
        ):
            return JoinRequest(room=RoomId(room), secret=secret, home_record=record)
    raise MalformedMessage("a join request is [1, room, secret, home record]")


def check_joiner(record: HomeRecord, peer_id: str) -> UserId:
    """The joining user, if their verified home record lists the peer that asks.

    Raises:
        InviteInvalid: the record names other homes: someone asks for another user.
    """
    if peer_id not in record.homes:
        raise InviteInvalid("the home record does not list the asking peer")
    return record.user


def encode_join_answer(add: MessageId) -> bytes:
    """[2, the message id of the ADD that let the joiner in]."""
    return encode_canonical([2, add])


def decode_join_answer(data: bytes) -> MessageId | ProtocolErrorFrame:
    """Parse an answer or an ERROR frame. Raises MalformedMessage."""
    match decode_canonical(data, max_bytes=MAX_JOIN_FRAME_BYTES):
        case [2, bytes() as add] if len(add) == KEY_BYTES:
            return MessageId(add)
        case [3, int() as code, str() as message] if code >= 0 and len(message) <= 256:
            return ProtocolErrorFrame(code=code, message=message)
    raise MalformedMessage("a join answer is [2, message id] or [3, code, text]")
