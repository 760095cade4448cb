"""Group invites and joining by one (SPEC §30.3, §30.4). Owns no state.

An invite is a secret an admin's home issues for one group. Its text (the code, or the link
`hearthmesh:join/<code>`) carries everything a joiner needs: the room id, the secret, and the
addresses of the admin's homes. The home keeps only the secret's digest (`invite_id`) in an
`InviteRecord` with the expiry, the use count and whether it was revoked; `check_invite` is the
one rule over such a record. The joiner asks on `/hearthmesh/join/0`: one REQUEST
`[1, room, secret, home record]` per stream, answered `[2, add message id]` or an ERROR frame
`[3, code, message]` (SPEC §11.1). The home record names the joiner and their homes; it must
list the peer that asks, so no one joins anyone else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, replace
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .delivery import ProtocolErrorFrame
from .envelope import MessageId, RoomId
from .errors import (
    InvalidIdentifier,
    InviteExpired,
    InviteInvalid,
    MalformedMessage,
    NotFound,
    QuotaExceeded,
    RoleRequired,
)
from .home_record import MAX_HOME_RECORD_BYTES, HomeRecord
from .identity import KEY_BYTES, UserId
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
    "decode_invite_records",
    "decode_join_answer",
    "decode_join_request",
    "encode_invite",
    "encode_invite_records",
    "encode_join_answer",
    "encode_join_request",
    "invite_id",
    "keep_invite",
    "may_invite",
    "revoke",
    "spend",
    "unspend",
]

JOIN_PROTOCOL: Final = "/hearthmesh/join/0"
INVITE_LINK_PREFIX: Final = "hearthmesh:join/"
INVITE_SECRET_BYTES: Final = 16
INVITE_ID_BYTES: Final = 16
MAX_INVITE_ADDRS: Final = 8
"""Addresses of admin homes an invite names (each with /p2p/<peer id>)."""
MAX_INVITE_TTL_MS: Final = 30 * 86_400_000
"""The longest an invite may stay valid."""
MAX_INVITES_PER_GROUP: Final = 32
"""Open invites one home keeps per group; a 33rd is refused until one is revoked."""
MAX_JOIN_FRAME_BYTES: Final = MAX_HOME_RECORD_BYTES + 256
"""A REQUEST is a home record (at most 8 KiB) and 70 bytes more."""
_MAX_ADDR_CHARS: Final = 256
MAX_INVITE_CODE_CHARS: Final = 4096
"""An invite's text, link or code (8 addresses fit in about 1,500)."""


def invite_id(secret: bytes) -> bytes:
    """The digest a home keeps instead of the secret: a copy of its store lets no one join."""
    return hashlib.sha256(b"hearthmesh/invite/v0\x00" + secret).digest()[:INVITE_ID_BYTES]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord:
    """An invite as the issuing home keeps it (never its secret)."""

    invite_id: bytes
    room: RoomId
    issuer: UserId
    created_ms: int
    expires_ms: int
    max_uses: int
    uses: int = 0
    revoked: bool = False


def check_invite(record: InviteRecord | None, *, now_ms: int) -> InviteRecord:
    """The record if it lets one more user in now (SPEC §30.3).

    Raises:
        InviteInvalid: no such invite for this group here (forged or unknown), or revoked.
        InviteExpired: past its expiry, or every use spent.
    """
    if record is None:
        raise InviteInvalid("no such invite for this group")
    if record.revoked:
        raise InviteInvalid("the invite was revoked")
    if now_ms >= record.expires_ms:
        raise InviteExpired("the invite has expired")
    if record.uses >= record.max_uses:
        raise InviteExpired("the invite's uses are spent")
    return record


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


def keep_invite(held: list[InviteRecord], new: InviteRecord, *, now_ms: int) -> list[InviteRecord]:
    """The group's records with `new` added; those that can let no one in any more are
    dropped first (revoked, expired, spent).

    Raises:
        QuotaExceeded: MAX_INVITES_PER_GROUP usable invites are held already.
    """
    usable = [r for r in held if not r.revoked and now_ms < r.expires_ms and r.uses < r.max_uses]
    if len(usable) >= MAX_INVITES_PER_GROUP:
        raise QuotaExceeded(f"a group holds at most {MAX_INVITES_PER_GROUP} open invites")
    return [*usable, new]


def spend(record: InviteRecord) -> InviteRecord:
    """The record with one more use counted."""
    return replace(record, uses=record.uses + 1)


def unspend(record: InviteRecord) -> InviteRecord:
    """The record with a use given back (the ADD it paid for was not committed)."""
    return replace(record, uses=max(0, record.uses - 1))


def revoke(record: InviteRecord) -> InviteRecord:
    """The record refusing every later join."""
    return replace(record, revoked=True)


def encode_invite_records(records: list[InviteRecord]) -> bytes:
    """One group's records, as a home stores them."""
    return encode_canonical(
        [
            [
                r.invite_id,
                r.room,
                r.issuer,
                r.created_ms,
                r.expires_ms,
                r.max_uses,
                r.uses,
                int(r.revoked),
            ]
            for r in records
        ]
    )


def decode_invite_records(data: bytes) -> list[InviteRecord]:
    """Parse what `encode_invite_records` wrote. Raises MalformedMessage."""
    value = decode_canonical(data, max_bytes=64 * 1024)
    if not isinstance(value, list):
        raise MalformedMessage("invite records are a list")
    records = []
    for item in value:
        match item:
            case [
                bytes() as iid,
                bytes() as room,
                bytes() as issuer,
                int() as created_ms,
                int() as expires_ms,
                int() as max_uses,
                int() as uses,
                int() as revoked,
            ] if (
                len(iid) == INVITE_ID_BYTES
                and len(room) == len(issuer) == KEY_BYTES
                and min(created_ms, expires_ms, max_uses, uses) >= 0
                and revoked in (0, 1)
            ):
                records.append(
                    InviteRecord(
                        invite_id=iid,
                        room=RoomId(room),
                        issuer=UserId(issuer),
                        created_ms=created_ms,
                        expires_ms=expires_ms,
                        max_uses=max_uses,
                        uses=uses,
                        revoked=bool(revoked),
                    )
                )
            case _:
                raise MalformedMessage("not an invite record")
    return records


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
