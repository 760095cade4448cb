"""`RoomMembers` (node/rooms/members.py): member sets read from their one owner, `RoomRegistry`.

Sends used to read members from a cache of their own that a callback had to clear on every
membership change; now a change the registry folded is what the next read sees, and a room the
registry dropped from memory is loaded again through the store."""

from __future__ import annotations

import asyncio

from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.registry import Admission, RoomRegistry
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action, MembershipChange, Role
from hearthmesh.protocol.membership_log import MembershipLimits
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.storage.api import AppendRequest, AppendResult, Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.memory import MemoryStore

from .test_rooms import ADMIN_ID, OURS, membership

NEWCOMER = UserId(b"\x03" * 32)


def _take(rooms: RoomRegistry, store: Store, envelope: Envelope) -> None:
    """What arrival does with an admitted MEMBERSHIP event, in one store batch."""
    assert rooms.admit(store, envelope, now_ms=0) is Admission.ACCEPT
    assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    rooms.note_stored(store, envelope, now_ms=0)


def _add(rooms: RoomRegistry, store: Store, room: RoomId, user: UserId) -> None:
    _take(rooms, store, membership(MembershipChange(action=Action.ADD, target=user), room=room))


def _group(rooms: RoomRegistry, store: Store, nonce: bytes) -> RoomId:
    room = group_room_id(ADMIN_ID, nonce)
    create = MembershipChange(action=Action.CREATE, target=ADMIN_ID, role=Role.ADMIN, nonce=nonce)
    _take(rooms, store, membership(create, room=room))
    _add(rooms, store, room, OURS)
    return room


async def test_a_folded_change_is_what_the_next_read_sees_and_a_dropped_room_reloads() -> None:
    async with asyncio.timeout(10):
        store = MemoryStore()
        rooms = RoomRegistry({OURS}, limits=MembershipLimits(max_rooms_held=1))
        async with AsyncStore(store) as async_store:
            members = RoomMembers(store=async_store, rooms=rooms, user=OURS)
            room = _group(rooms, store, b"a" * 16)
            assert await members.of(room) == {ADMIN_ID, OURS}
            _add(rooms, store, room, NEWCOMER)
            assert await members.of(room) == {ADMIN_ID, OURS, NEWCOMER}  # nothing to forget

            other = _group(rooms, store, b"b" * 16)  # holds one room: the first is dropped
            assert rooms.view(room) is None
            assert await members.of(room) == {ADMIN_ID, OURS, NEWCOMER}  # from the store
            assert await members.of(other) == {ADMIN_ID, OURS}
            assert await members.co_members() == {ADMIN_ID, OURS, NEWCOMER}
            assert await members.of(group_room_id(ADMIN_ID, b"c" * 16)) == frozenset()
