"""Room ids (SPEC §3.4): a direct room is derived from its two users, a group from its creator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from .envelope import RoomId
from .errors import LocalProtocolError
from .identity import UserId

__all__ = [
    "DIRECT_ROOM_DOMAIN",
    "GROUP_ROOM_DOMAIN",
    "direct_room_id",
    "group_room_id",
    "is_direct_room",
]

DIRECT_ROOM_DOMAIN: Final = b"hearthmesh/direct-room/v0\x00"
GROUP_ROOM_DOMAIN: Final = b"hearthmesh/group-room/v0\x00"


def direct_room_id(a: UserId, b: UserId) -> RoomId:
    """SHA-256(domain | lower key | higher key): both users derive the same id."""
    if a == b:
        raise LocalProtocolError("a direct room needs two different users")
    low, high = sorted((a, b))
    return RoomId(hashlib.sha256(DIRECT_ROOM_DOMAIN + low + high).digest())


def is_direct_room(room: RoomId, members: Iterable[UserId]) -> bool:
    """True if `room` is the direct room of exactly these two users."""
    users = sorted(set(members))
    return len(users) == 2 and direct_room_id(users[0], users[1]) == room


def group_room_id(creator: UserId, nonce: bytes) -> RoomId:
    """SHA-256(domain | creator | nonce); the nonce (16+ random bytes) comes from the caller."""
    if len(nonce) < 16:
        raise LocalProtocolError("a group nonce is at least 16 bytes")
    return RoomId(hashlib.sha256(GROUP_ROOM_DOMAIN + creator + nonce).digest())
