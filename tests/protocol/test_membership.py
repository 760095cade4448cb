"""Membership fold of SPEC §12: deterministic, rule-checked, never half-applied."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.canonical import decode_canonical
from hearthmesh.protocol.envelope import Envelope, Kind, seal
from hearthmesh.protocol.errors import (
    MalformedMessage,
    MembershipLimit,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.membership import (
    MAX_ADD_TARGETS,
    MAX_GROUP_SIZE,
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    Ruling,
    decode_membership,
    direct_room_state,
    encode_membership,
    fold,
    refusal_of,
    ruling,
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


def _users(count: int) -> tuple[UserId, ...]:
    return tuple(UserId(b"u" * 28 + (n + 10).to_bytes(4, "big")) for n in range(count))


def test_one_add_names_up_to_64_users_all_or_none() -> None:
    """SPEC §12.1.1: an ADD of several round-trips, adds every user it names in one step, and
    is ignored whole when one of them is a member already or the group lacks room for all."""
    bob, carol = UserId(BOB.public), UserId(CAROL.public)
    many = MembershipChange(action=Action.ADD, target=bob, more=(carol, *_users(62)))
    assert decode_membership(encode_membership(many)) == many
    assert many.targets[:2] == (bob, carol) and len(many.targets) == MAX_ADD_TARGETS
    state = fold(ROOM, [create(), event(ALICE, Action.ADD, BOB, more=many.more)])
    assert set(state.members) == {UserId(ALICE.public), *many.targets}
    # bob is a member already: the second ADD (naming bob and 3 new users) changes nothing
    again = event(ALICE, Action.ADD, BOB, more=_users(66)[63:])
    assert fold(ROOM, [create(), event(ALICE, Action.ADD, BOB), again]).members.keys() == {
        UserId(ALICE.public),
        bob,
    }
    # a group of 1,024 holds 1,023 besides its owner: an ADD of two past that waits whole
    full = fold(ROOM, [create()])
    full.members.update(dict.fromkeys(_users(1023)[1:], Role.MEMBER))
    assert len(full.members) == MAX_GROUP_SIZE - 1
    two = MembershipChange(action=Action.ADD, target=bob, more=(carol,))
    assert ruling(full, UserId(ALICE.public), two, at_ms=0) is Ruling.NOT_YET
    assert isinstance(refusal_of(full, UserId(ALICE.public), two, at_ms=0), MembershipLimit)
    one = MembershipChange(action=Action.ADD, target=bob)
    assert ruling(full, UserId(ALICE.public), one, at_ms=0) is Ruling.ALLOWED


def test_only_an_add_names_more_users_and_at_most_64() -> None:
    bob = UserId(BOB.public)
    with pytest.raises(MalformedMessage):  # 65 users
        decode_membership(
            encode_membership(MembershipChange(action=Action.ADD, target=bob, more=_users(64)))
        )
    with pytest.raises(MalformedMessage):
        decode_membership(
            encode_membership(MembershipChange(action=Action.KICK, target=bob, more=_users(1)))
        )
    with pytest.raises(MalformedMessage):  # bob twice
        decode_membership(
            encode_membership(MembershipChange(action=Action.ADD, target=bob, more=(bob,)))
        )
    with pytest.raises(TooLarge):  # 100 users: past the bytes before the count is read
        decode_membership(
            encode_membership(MembershipChange(action=Action.ADD, target=bob, more=_users(99)))
        )
    # an ADD of one keeps the six fields (older bodies and their vectors stand)
    one = encode_membership(MembershipChange(action=Action.ADD, target=bob))
    fields = decode_canonical(one, max_bytes=len(one))
    assert isinstance(fields, list) and len(fields) == 6
