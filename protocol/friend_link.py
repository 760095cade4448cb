"""The `hearthmesh:` friend link (SPEC §32.2), sans-I/O.

`hearthmesh:friend/<user id>` names the user to ask (SPEC §3.2 text form); `?record=` may add
their signed home record in base64url without padding, so a node that never met them can
deliver the request at once (the record is verified like any other, SPEC §13.2). The same text
is what the friend QR code holds. Owns no state.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from .errors import MalformedMessage
from .home_record import MAX_HOME_RECORD_BYTES
from .identity import UserId, decode_user_id, user_id_text

__all__ = [
    "FRIEND_LINK_PREFIX",
    "MAX_FRIEND_LINK_CHARS",
    "decode_friend_link",
    "encode_friend_link",
]

FRIEND_LINK_PREFIX: Final = "hearthmesh:friend/"
_RECORD_PARAM: Final = "?record="
MAX_FRIEND_LINK_CHARS: Final = 4096
"""A longer link carries no record (it would not fit a QR code); the DHT finds the user."""


def encode_friend_link(user: UserId, home_record: bytes | None = None) -> str:
    """The link for `user`, with their record when it fits `MAX_FRIEND_LINK_CHARS`."""
    link = FRIEND_LINK_PREFIX + user_id_text(user)
    if home_record is None:
        return link
    with_record = link + _RECORD_PARAM + base64.urlsafe_b64encode(home_record).decode().rstrip("=")
    return with_record if len(with_record) <= MAX_FRIEND_LINK_CHARS else link


def decode_friend_link(text: str) -> tuple[UserId, bytes | None]:
    """(user, home record bytes or None) of a friend link.

    Raises:
        MalformedMessage: not a friend link, too long, or a record that is not base64url.
        InvalidIdentifier: the user id is malformed.
    """
    if len(text) > MAX_FRIEND_LINK_CHARS or not text.startswith(FRIEND_LINK_PREFIX):
        raise MalformedMessage(f"a friend link is {FRIEND_LINK_PREFIX}<user id>[?record=...]")
    user_text, _, record_text = text[len(FRIEND_LINK_PREFIX) :].partition(_RECORD_PARAM)
    user = decode_user_id(user_text)
    if not record_text:
        return user, None
    try:
        record = base64.urlsafe_b64decode(record_text + "=" * (-len(record_text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedMessage("a friend link's record is base64url") from None
    if len(record) > MAX_HOME_RECORD_BYTES:
        raise MalformedMessage("a friend link's record is over the size limit")
    return user, record
