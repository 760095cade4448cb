"""`RoomMembers` (node/rooms/members.py): member sets read from their one owner, `RoomRegistry`.

Sends used to read members from a cache of their own that a callback had to clear on every
membership change; now a change the registry folded is what the next read sees, and a room the
registry dropped from memory is loaded again through the store."""

from __future__ import annotations

import asyncio
import itertools

from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)
from hearthmesh.protocol.membership_log import MembershipLimits
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.storage.api import AppendRequest, AppendResult, Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.memory import MemoryStore

from ..storage.helpers import USER_A, make_envelope

ADMIN = UserId(USER_A)
OURS = UserId(b"\x02" * 32)
NEWCOMER = UserId(b"\x03" * 32)
_seq = itertools.count(1)


def _take(rooms: RoomRegistry, store: Store, room: RoomId, change: MembershipChange) -> None:
    """Store an (admitted) MEMBERSHIP event and fold it, as arrival does in one store batch."""
    n = next(_seq)
    envelope = make_envelope(
        room,
        seq=n,
        wall_ms=1_000 + n,
        kind=Kind.MEMBERSHIP,
        user=ADMIN,
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=encode_membership(change),
    )
    assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    rooms.note_stored(store, envelope, now_ms=0)


def _add(rooms: RoomRegistry, store: Store, room: RoomId, user: UserId) -> None:
    _take(rooms, store, room, MembershipChange(action=Action.ADD, target=user))


def _group(rooms: RoomRegistry, store: Store, nonce: bytes) -> RoomId:
    room = group_room_id(ADMIN, nonce)
    create = MembershipChange(action=Action.CREATE, target=ADMIN, role=Role.ADMIN, nonce=nonce)
    _take(rooms, store, room, create)
    _add(rooms, store, room, OURS)
    return room


async def test_a_folded_change_is_what_the_next_read_sees_and_a_dropped_room_reloads() -> None:
    async with asyncio.timeout(10):
        store = MemoryStore()
        rooms = RoomRegistry({OURS}, limits=MembershipLimits(max_rooms_held=1))
        async with AsyncStore(store) as async_store:
            members = RoomMembers(store=async_store, rooms=rooms, user=OURS)
            room = _group(rooms, store, b"a" * 16)
            assert await members.of(room) == {ADMIN, OURS}
            _add(rooms, store, room, NEWCOMER)
            assert await members.of(room) == {ADMIN, OURS, NEWCOMER}  # nothing to forget

            other = _group(rooms, store, b"b" * 16)  # holds one room: the first is dropped
            assert rooms.view(room) is None
            assert await members.of(room) == {ADMIN, OURS, NEWCOMER}  # from the store
            assert await members.of(other) == {ADMIN, OURS}
            assert await members.co_members() == {ADMIN, OURS, NEWCOMER}
            assert await members.of(group_room_id(ADMIN, b"c" * 16)) == frozenset()
