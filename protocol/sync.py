"""The sync stream `/hearthmesh/sync/0` between homes of one user (SPEC §23): frames only.

Two homes of the same user swap their room lists, then reconcile each room's history with the
range-based set reconciliation of SPEC §21. What one side has and the other lacks then travels
by the guaranteed path (SPEC §11) like any other delivery, so nothing new is needed to move
envelopes; this stream only finds out which ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .envelope import RoomId
from .errors import MalformedMessage, TooLarge
from .identity import KEY_BYTES, UserId

__all__ = [
    "MAX_ROOMS",
    "MAX_SYNC_FRAME_BYTES",
    "SYNC_PROTOCOL",
    "RoomEntry",
    "RoomList",
    "RoomReconcile",
    "SyncDone",
    "SyncFrameType",
    "decode_sync_frame",
    "encode_done",
    "encode_reconcile",
    "encode_room_list",
]

SYNC_PROTOCOL: Final = "/hearthmesh/sync/0"
MAX_ROOMS: Final = 10_000
MAX_SYNC_FRAME_BYTES: Final = 2 * 1024 * 1024
"""Above the reconciliation frame limit (1 MiB) with room for the room id and framing."""


class SyncFrameType(IntEnum):
    """First element of each sync frame (SPEC §23.2)."""

    ROOMS = 1
    RECONCILE = 2
    DONE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomEntry:
    """A room the sender's user is in; a direct room carries its two users."""

    room: RoomId
    direct_users: tuple[UserId, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomList:
    rooms: tuple[RoomEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomReconcile:
    """One reconciliation message of SPEC §21 for one room; empty: "I have nothing more"."""

    room: RoomId
    message: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDone:
    """The initiator is finished; the stream closes."""


def encode_room_list(rooms: list[RoomEntry]) -> bytes:
    """[1, [[room, [user...]], ...]]."""
    entries: list[CborValue] = [[e.room, list(e.direct_users)] for e in rooms]
    return encode_canonical([int(SyncFrameType.ROOMS), entries])


def encode_reconcile(room: RoomId, message: bytes) -> bytes:
    """[2, room, reconciliation message]."""
    return encode_canonical([int(SyncFrameType.RECONCILE), room, message])


def encode_done() -> bytes:
    """[3]."""
    return encode_canonical([int(SyncFrameType.DONE)])


def _room_entry(value: CborValue) -> RoomEntry:
    match value:
        case [bytes() as room, list() as users] if len(room) == 32 and len(users) in (0, 2):
            if all(isinstance(u, bytes) and len(u) == KEY_BYTES for u in users):
                return RoomEntry(
                    room=RoomId(room),
                    direct_users=tuple(UserId(u) for u in users if isinstance(u, bytes)),
                )
    raise MalformedMessage("a room entry is [room, [] or [user, user]]")


def decode_sync_frame(data: bytes) -> RoomList | RoomReconcile | SyncDone:
    """Parse one sync frame. Raises TooLarge (before parsing) or MalformedMessage."""
    value = decode_canonical(data, max_bytes=MAX_SYNC_FRAME_BYTES)
    match value:
        case [1, list() as entries]:
            if len(entries) > MAX_ROOMS:
                raise TooLarge(f"more than {MAX_ROOMS} rooms")
            return RoomList(rooms=tuple(_room_entry(e) for e in entries))
        case [2, bytes() as room, bytes() as message] if len(room) == 32:
            return RoomReconcile(room=RoomId(room), message=message)
        case [3]:
            return SyncDone()
    raise MalformedMessage("not a sync frame")
