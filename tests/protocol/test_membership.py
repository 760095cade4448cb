"""Membership fold of SPEC §12: deterministic, rule-checked, never half-applied."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.envelope import Envelope, Kind, seal
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    decode_membership,
    direct_room_state,
    encode_membership,
    fold,
)
from hearthmesh.protocol.rooms import direct_room_id, group_room_id

ALICE, BOB, CAROL = (keypair_from_seed(bytes([i]) * 32) for i in (1, 2, 3))
NONCE = b"n" * 16
ROOM = group_room_id(UserId(ALICE.public), NONCE)
_seq = itertools.count(1)


def event(who: KeyPair, action: Action, target: KeyPair, **extra: object) -> Envelope:
    n = next(_seq)
    change = MembershipChange(action=action, target=UserId(target.public), **extra)  # type: ignore[arg-type]
    return seal(
        who,  # user key doubles as device key: the fold looks at sender_user only
        kind=Kind.MEMBERSHIP,
        room=ROOM,
        sender_user=UserId(who.public),
        seq=n,
        hlc=Timestamp(wall_ms=1000, counter=n),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=encode_membership(change),
    )


def create(open_: bool = False) -> Envelope:
    return event(ALICE, Action.CREATE, ALICE, role=Role.ADMIN, nonce=NONCE, open=open_, name="g")


def members(events: list[Envelope]) -> set[bytes]:
    return set(fold(ROOM, events).members)


def test_create_add_leave() -> None:
    state = fold(ROOM, [create(), event(ALICE, Action.ADD, BOB), event(BOB, Action.LEAVE, BOB)])
    assert state.name == "g"
    assert state.members == {UserId(ALICE.public): Role.OWNER}


def test_only_admins_add_and_kick() -> None:
    events = [create(), event(ALICE, Action.ADD, BOB), event(BOB, Action.ADD, CAROL)]
    assert members(events) == {ALICE.public, BOB.public}
    events.append(event(BOB, Action.KICK, ALICE))
    assert members(events) == {ALICE.public, BOB.public}
    assert fold(ROOM, events).ignored == 2


def test_join_needs_an_open_group() -> None:
    assert members([create(), event(BOB, Action.JOIN, BOB)]) == {ALICE.public}
    assert members([create(open_=True), event(BOB, Action.JOIN, BOB)]) == {
        ALICE.public,
        BOB.public,
    }


def test_create_must_match_the_room_id_and_come_once() -> None:
    wrong = event(ALICE, Action.CREATE, ALICE, role=Role.ADMIN, nonce=b"x" * 16)
    assert members([wrong]) == set()
    again = event(BOB, Action.CREATE, BOB, role=Role.ADMIN, nonce=NONCE)
    assert members([create(), again]) == {ALICE.public}


def test_promoted_member_can_add() -> None:
    events = [
        create(),
        event(ALICE, Action.ADD, BOB),
        event(ALICE, Action.ROLE, BOB, role=Role.ADMIN),
        event(BOB, Action.ADD, CAROL),
    ]
    assert members(events) == {ALICE.public, BOB.public, CAROL.public}


def test_direct_room_members_follow_from_the_id() -> None:
    a, b = UserId(ALICE.public), UserId(BOB.public)
    state = direct_room_state(a, b)
    assert state.room == direct_room_id(a, b)
    assert set(state.members) == {a, b}


def test_body_round_trips() -> None:
    change = MembershipChange(action=Action.KICK, target=UserId(BOB.public))
    assert decode_membership(encode_membership(change)) == change


@given(st.binary(max_size=200))
def test_arbitrary_bodies_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_membership(data)
