"""`RoomMembers` (node/rooms/members.py): member sets read from their one owner, `RoomRegistry`.

Sends used to read members from a cache of their own that a callback had to clear on every
membership change; now a change the registry folded is what the next read sees, and a room the
registry dropped from memory is loaded again through the store."""

from __future__ import annotations

import asyncio
import itertools

from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.registry import Admission, RoomRegistry
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
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

ADMIN = keypair_from_seed(b"\x01" * 32)
ADMIN_ID = UserId(ADMIN.public)
OURS = UserId(b"\x02" * 32)
NEWCOMER = UserId(b"\x03" * 32)
_seq = itertools.count(1)


def _change(room: RoomId, change: MembershipChange) -> Envelope:
    n = next(_seq)
    return seal(
        ADMIN,
        kind=Kind.MEMBERSHIP,
        room=room,
        sender_user=ADMIN_ID,
        seq=n,
        hlc=Timestamp(wall_ms=1_000_000 + n, counter=0),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=encode_membership(change),
    )


def _take(rooms: RoomRegistry, store: Store, envelope: Envelope) -> None:
    """What arrival does with an admitted MEMBERSHIP event, in one store batch."""
    assert rooms.admit(store, envelope, now_ms=0) is Admission.ACCEPT
    assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
    rooms.note_stored(store, envelope, now_ms=0)


def _group(rooms: RoomRegistry, store: Store, nonce: bytes) -> RoomId:
    room = group_room_id(ADMIN_ID, nonce)
    create = MembershipChange(action=Action.CREATE, target=ADMIN_ID, role=Role.ADMIN, nonce=nonce)
    _take(rooms, store, _change(room, create))
    _take(rooms, store, _change(room, MembershipChange(action=Action.ADD, target=OURS)))
    return room


async def test_a_folded_change_is_what_the_next_read_sees_and_a_dropped_room_reloads() -> None:
    async with asyncio.timeout(10):
        store = MemoryStore()
        rooms = RoomRegistry({OURS}, limits=MembershipLimits(max_rooms_held=1))
        async with AsyncStore(store) as async_store:
            members = RoomMembers(store=async_store, rooms=rooms, user=OURS)
            room = _group(rooms, store, b"a" * 16)
            assert await members.of(room) == {ADMIN_ID, OURS}
            _take(rooms, store, _change(room, MembershipChange(action=Action.ADD, target=NEWCOMER)))
            assert await members.of(room) == {ADMIN_ID, OURS, NEWCOMER}  # nothing to forget

            other = _group(rooms, store, b"b" * 16)  # holds one room: the first is dropped
            assert rooms.view(room) is None
            assert await members.of(room) == {ADMIN_ID, OURS, NEWCOMER}  # from the store
            assert await members.of(other) == {ADMIN_ID, OURS}
            assert await members.co_members() == {ADMIN_ID, OURS, NEWCOMER}
            assert await members.of(group_room_id(ADMIN_ID, b"c" * 16)) == frozenset()
