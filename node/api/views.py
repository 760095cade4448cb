"""JSON shapes of the client API (SPEC §15.5): envelopes, conversations, users, groups.

Field names keep the seed's spelling where the seed named them (RecipientId, RecipientName,
RecipientProfilePic, LatestMessage), and those are spelt here only (`direct_recipient_view`,
`group_recipient_view`, `latest_message_view`); everything else is snake_case.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.protocol.actions import ANNOTATED_CONTENT_TYPE, MessageState, decode_annotated
from hearthmesh.protocol.content import (
    MEDIA_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    decode_media,
)
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, device_id_text, user_id_text
from hearthmesh.protocol.membership import Role, decode_membership
from hearthmesh.protocol.receipts import ReceiptStatus
from hearthmesh.storage.api import Cursor, Member, Profile

__all__ = [
    "CURSOR_PATTERN",
    "ROLE_NAMES",
    "STATUS_NAMES",
    "decode_cursor",
    "direct_recipient_view",
    "encode_cursor",
    "group_recipient_view",
    "hlc_view",
    "latest_message_view",
    "membership_view",
    "message_view",
    "profile_view",
    "recalled_view",
]

ROLE_NAMES: Final = {role: role.name.lower() for role in Role}


def _role_name(value: int) -> str:
    return ROLE_NAMES[Role(value)] if value in Role._value2member_map_ else "member"


def membership_view(envelope: Envelope, members: list[Member]) -> dict[str, Any]:
    """A MEMBERSHIP event as the `membership` frame shows it (SPEC §15.4, §30.5): who did what
    to whom, and the room's members with their roles now."""
    view: dict[str, Any] = {
        "room_id": envelope.room.hex(),
        "members": sorted(user_id_text(m.user) for m in members),
        "roles": {user_id_text(m.user): _role_name(m.role) for m in members},
        "by": user_id_text(envelope.sender_user),
    }
    try:
        change = decode_membership(envelope.body)
    except RemoteProtocolError:  # stored before bodies were checked: members only
        return view
    view["action"] = change.action.name.lower()
    view["target"] = user_id_text(change.target)
    if change.more:  # an ADD of several (SPEC §12.1.1): `target` is the first of them
        view["targets"] = [user_id_text(t) for t in change.targets]
    return view


STATUS_NAMES: dict[int, str] = {
    ReceiptStatus.SENT: "sent",
    ReceiptStatus.DELIVERED: "delivered",
    ReceiptStatus.READ: "read",
}


def hlc_view(ts: Timestamp) -> list[int]:
    """[wall_ms, counter]."""
    return [ts.wall_ms, ts.counter]


def encode_cursor(cursor: Cursor | None) -> str | None:
    return None if cursor is None else base64.urlsafe_b64encode(cursor).decode().rstrip("=")


_CURSOR: Final = "[A-Za-z0-9_-]{70}"
"""A history cursor: a 52-byte history slot (storage/keys.py) in unpadded base64url."""
CURSOR_PATTERN: Final = f"^{_CURSOR}$"
"""The same, as the OpenAPI document states it."""


def decode_cursor(text: str) -> Cursor:
    """Raises MalformedMessage (base64 decoding alone would skip characters it does not know)."""
    if re.fullmatch(_CURSOR, text, re.ASCII) is None:
        raise MalformedMessage("cursor is not one this API returned")
    return Cursor(base64.urlsafe_b64decode(text + "=="))


def message_view(envelope: Envelope, state: MessageState | None = None) -> dict[str, Any]:
    """A message as clients see it; text and media are decoded, other bodies are base64.

    `state` is what its actions folded to (SPEC §31.5): a recalled message shows no content,
    `status` RECALLED and `is_deleted`; an edited one its latest text and every edit."""
    view: dict[str, Any] = {
        "message_id": envelope.message_id.hex(),
        "room_id": envelope.room.hex(),
        "sender_id": user_id_text(envelope.sender_user),
        "sender_device": device_id_text(envelope.sender_device),
        "kind": envelope.kind.name.lower(),
        "seq": envelope.seq,
        "hlc": hlc_view(envelope.hlc),
        "sent_ms": envelope.hlc.wall_ms,
        "written_ms": envelope.hlc.wall_ms,
        "content_type": envelope.content_type,
        "is_deleted": False,
    }
    if state is not None and state.is_deleted:
        return recalled_view(view, state.recalled_by)
    content = content_of(envelope)
    if content is None:
        view["type"] = "encrypted"
        return view
    content_type, body = content.content_type, content.body
    if content_type == ANNOTATED_CONTENT_TYPE:
        try:
            annotated = decode_annotated(body)
        except RemoteProtocolError:
            view["type"] = "unknown"
            return view
        content_type, body = annotated.content_type, annotated.body
        view["forwarded"] = annotated.forwarded
        if annotated.reply_to is not None:
            view["reply_to"] = annotated.reply_to.hex()
    _content_fields(view, content_type, body)
    if state is not None:
        view["reactions"] = {
            emoji: [user_id_text(u) for u in users] for emoji, users in state.reactions.items()
        }
        view["edited"] = bool(state.edits)
        if state.edits:
            view["message"] = state.edits[-1].text
            view["edits"] = [
                {"message_id": e.message_id.hex(), "message": e.text, "hlc": hlc_view(e.hlc)}
                for e in state.edits
            ]
    return view


def recalled_view(view: dict[str, Any], recalled_by: bytes | None) -> dict[str, Any]:
    """A recalled message (SPEC §31.1): its header only."""
    view.update(type="recalled", status="RECALLED", is_deleted=True)
    if recalled_by is not None:
        view["recalled_by"] = recalled_by.hex()
    return view


def _content_fields(view: dict[str, Any], content_type: str, body: bytes) -> None:
    if content_type == TEXT_CONTENT_TYPE:
        view["type"] = "text"
        view["message"] = body.decode("utf-8", errors="replace")
    elif content_type == MEDIA_CONTENT_TYPE:
        try:
            media = decode_media(body)
        except RemoteProtocolError:
            view["type"] = "unknown"
        else:
            view["type"] = media.type
            view["message"] = media.caption
            view["media"] = {
                "digest": media.digest.hex(),
                "content_type": media.content_type,
                "size": media.size,
            }
    else:
        view["type"] = "binary"
        view["body_b64"] = base64.b64encode(body).decode()


def profile_view(user: UserId, profile: Profile | None) -> dict[str, Any]:
    """The seed's User row: id, name, picture (a media digest), bio."""
    return {
        "user_id": user_id_text(user),
        "handle": profile.handle if profile else "",
        "display_name": profile.display_name if profile else "",
        "profile_pic": profile.avatar.hex() if profile and profile.avatar else None,
        "bio": profile.bio if profile else "",
    }


def direct_recipient_view(user: UserId, profile: Profile | None) -> dict[str, Any]:
    """The seed's recipient fields of a direct conversation: the other user and their profile."""
    return {
        "RecipientId": user_id_text(user),
        "RecipientName": (
            profile.display_name if profile and profile.display_name else user_id_text(user)
        ),
        "RecipientProfilePic": profile.avatar.hex() if profile and profile.avatar else None,
    }


def group_recipient_view(name: str) -> dict[str, Any]:
    """The seed's recipient fields of a group: its name, and no picture."""
    return {"RecipientName": name, "RecipientProfilePic": None}


def latest_message_view(
    envelope: Envelope | None, state: MessageState | None = None
) -> dict[str, Any]:
    """The seed's field for a conversation's latest message (None: none yet), folded with
    `state` (SPEC §31.5)."""
    return {"LatestMessage": None if envelope is None else message_view(envelope, state)}
