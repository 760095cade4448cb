"""`RoomRegistry` over a real store: per-event membership state (SPEC §12.3, issue 12 finding 5)."""

from __future__ import annotations

import itertools

from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.arrival import ArrivalRules, Verdict
from hearthmesh.protocol.envelope import Envelope, Kind, seal
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
from hearthmesh.storage.api import AppendRequest, AppendResult
from hearthmesh.storage.memory import MemoryStore
from hearthmesh.storage.store import KvStore

ADMIN = keypair_from_seed(b"\x01" * 32)
ADMIN_ID = UserId(ADMIN.public)
OURS = UserId(b"\x02" * 32)
NONCE = b"r" * 16
ROOM = group_room_id(ADMIN_ID, NONCE)
_seq = itertools.count(1)


def membership(change: MembershipChange) -> Envelope:
    n = next(_seq)
    return seal(
        ADMIN,
        kind=Kind.MEMBERSHIP,
        room=ROOM,
        sender_user=ADMIN_ID,
        seq=n,
        hlc=Timestamp(wall_ms=1_000_000 + n, counter=0),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=encode_membership(change),
    )


def admitted(rooms: RoomRegistry, store: KvStore, envelope: Envelope) -> bool:
    """The arrival rules let `envelope` into its room's history, reading the registry."""
    decision = ArrivalRules({OURS}).decide(
        envelope, recipient=OURS, device_listed=None, rooms=rooms.states(store), now_ms=0
    )
    return decision.verdict is Verdict.STORE


def user(i: int) -> UserId:
    return UserId(i.to_bytes(4, "big") * 8)


def test_a_256_event_batch_in_a_2300_event_room_costs_256_fold_steps() -> None:
    """Each arriving event used to re-fold the room's whole list on the event loop (at ~2,300
    events a 256-event batch held the loop ~10 s). Now it is one step per event."""
    limits = MembershipLimits(max_events_per_room=4096, max_events_per_sender=4096)
    store = MemoryStore()
    create = MembershipChange(
        action=Action.CREATE, target=ADMIN_ID, role=Role.ADMIN, nonce=NONCE, name="big"
    )
    history = [membership(create), membership(MembershipChange(action=Action.ADD, target=OURS))]
    # 256 stay; the others come and go, so the group stays under its 1,024 members (§30.2)
    history += [membership(MembershipChange(action=Action.ADD, target=user(i))) for i in range(256)]
    history += [
        membership(MembershipChange(action=action, target=user(i)))
        for i in range(256, 1277)
        for action in (Action.ADD, Action.KICK)
    ]
    assert store.append_many([AppendRequest(envelope=e) for e in history]) == [
        AppendResult.STORED
    ] * len(history)
    for member in (ADMIN_ID, OURS):
        store.add_member(ROOM, member, role=0, local=member == OURS, now_ms=0)
    rooms = RoomRegistry({OURS}, limits=limits)
    assert rooms.state(store, ROOM) is not None  # loaded: one fold of the 2,300 events
    loaded = rooms.fold_steps(ROOM)
    assert loaded == 2300
    batch = [
        membership(MembershipChange(action=Action.ROLE, target=user(i), role=Role.ADMIN))
        for i in range(256)
    ]
    for envelope in batch:
        assert admitted(rooms, store, envelope)
        assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
        assert rooms.note_stored(store, envelope, now_ms=0)
    assert rooms.fold_steps(ROOM) - loaded == 256
    rows = {m.user: m.role for m in store.members(ROOM)}
    assert all(rows[user(i)] == Role.ADMIN for i in range(256))
    assert len(rooms.members(store, ROOM)) == 258


def test_folds_held_in_memory_are_bounded_and_reload_from_the_store() -> None:
    """Only `max_rooms_held` groups' logs stay in memory; a dropped one is folded again from
    the store when next needed, to the same state."""
    store = MemoryStore()
    rooms = RoomRegistry({OURS}, limits=MembershipLimits(max_rooms_held=1))
    groups = []
    for nonce in (b"a" * 16, b"b" * 16):
        room = group_room_id(ADMIN_ID, nonce)
        create = MembershipChange(
            action=Action.CREATE, target=ADMIN_ID, role=Role.ADMIN, nonce=nonce
        )
        add = MembershipChange(action=Action.ADD, target=OURS)
        for change in (create, add):
            envelope = seal(
                ADMIN,
                kind=Kind.MEMBERSHIP,
                room=room,
                sender_user=ADMIN_ID,
                seq=next(_seq),
                hlc=Timestamp(wall_ms=next(_seq), counter=0),
                content_type=MEMBERSHIP_CONTENT_TYPE,
                body=encode_membership(change),
            )
            assert admitted(rooms, store, envelope)
            assert store.append(AppendRequest(envelope=envelope)) is AppendResult.STORED
            rooms.note_stored(store, envelope, now_ms=0)
        groups.append(room)
    first, second = groups
    assert rooms.view(first) is None and rooms.view(second) is not None  # first was dropped
    assert rooms.members(store, first) == {ADMIN_ID, OURS}  # folded again from the store
    assert rooms.view(second) is None
    assert {m.user for m in store.members(first)} == {ADMIN_ID, OURS}
