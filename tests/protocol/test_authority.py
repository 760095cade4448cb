"""Room authority of SPEC §12.2 and the incremental membership log of §12.3-12.5."""

from __future__ import annotations

import itertools

import pytest

from hearthmesh.protocol.authority import (
    DeferralBudget,
    DeferralPolicy,
    Ruling,
    gossip_ruling,
    membership_ruling,
    writer_ruling,
)
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import MembershipLimit, RemoteProtocolError, TooLarge
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    RoomState,
    decode_membership,
    direct_room_state,
    encode_membership,
    fold,
)
from hearthmesh.protocol.membership_log import MembershipLimits, MembershipLog
from hearthmesh.protocol.rooms import group_room_id

ALICE, BOB, CAROL, DAVE = (keypair_from_seed(bytes([i]) * 32) for i in (1, 2, 3, 4))
NONCE = b"n" * 16
ROOM = group_room_id(UserId(ALICE.public), NONCE)
_seq = itertools.count(1)


def uid(key: KeyPair) -> UserId:
    return UserId(key.public)


def sealed(
    who: KeyPair, kind: Kind, body: bytes, *, room: RoomId = ROOM, wall_ms: int | None = None
) -> Envelope:
    n = next(_seq)
    return seal(
        who,
        kind=kind,
        room=room,
        sender_user=uid(who),
        seq=n,
        hlc=Timestamp(wall_ms=1000 + n if wall_ms is None else wall_ms, counter=n),
        content_type=MEMBERSHIP_CONTENT_TYPE if kind is Kind.MEMBERSHIP else "text/plain",
        body=body,
    )


def event(
    who: KeyPair, action: Action, target: KeyPair, *, wall_ms: int | None = None, **extra: object
) -> Envelope:
    change = MembershipChange(action=action, target=uid(target), **extra)  # type: ignore[arg-type]
    return sealed(who, Kind.MEMBERSHIP, encode_membership(change), wall_ms=wall_ms)


def create(*, wall_ms: int | None = None) -> Envelope:
    return event(
        ALICE, Action.CREATE, ALICE, wall_ms=wall_ms, role=Role.ADMIN, nonce=NONCE, name="g"
    )


def offer(log: MembershipLog, envelope: Envelope) -> Ruling:
    """What a node does with one arriving event: judge it, and hold it if allowed."""
    change = decode_membership(envelope.body)
    ruling = membership_ruling(log, envelope, change)
    if ruling is Ruling.ALLOWED:
        log.add(envelope, change)
    return ruling


# --- §12.2: the authority table -------------------------------------------------------------


def test_a_direct_room_never_takes_membership_events() -> None:
    """A stranger's (or a member's) LEAVE, ADD or KICK into a direct room is refused for good."""
    state = direct_room_state(uid(ALICE), uid(BOB))
    for who, action, target in [
        (CAROL, Action.LEAVE, CAROL),
        (BOB, Action.LEAVE, BOB),
        (ALICE, Action.ADD, CAROL),
        (ALICE, Action.KICK, BOB),
    ]:
        change = MembershipChange(action=action, target=uid(target))
        envelope = sealed(who, Kind.MEMBERSHIP, encode_membership(change), room=state.room)
        assert writer_ruling(state, envelope, direct_with_local=False, change=change) is (
            Ruling.NEVER
        )
    message = sealed(CAROL, Kind.MESSAGE, b"hi", room=state.room)
    assert writer_ruling(state, message, direct_with_local=False) is Ruling.NEVER
    ours = sealed(BOB, Kind.MESSAGE, b"hi", room=state.room)
    assert writer_ruling(state, ours, direct_with_local=False) is Ruling.ALLOWED


def test_leave_and_join_are_self_only_and_join_needs_an_open_group() -> None:
    log = MembershipLog(ROOM)
    assert offer(log, create()) is Ruling.ALLOWED
    assert offer(log, event(ALICE, Action.ADD, BOB)) is Ruling.ALLOWED
    assert offer(log, event(CAROL, Action.LEAVE, BOB)) is Ruling.NEVER
    assert offer(log, event(ALICE, Action.LEAVE, BOB)) is Ruling.NEVER
    assert offer(log, event(CAROL, Action.JOIN, CAROL)) is Ruling.NEVER  # closed group
    assert set(log.state.members) == {uid(ALICE), uid(BOB)}
    open_room = group_room_id(uid(ALICE), b"o" * 16)
    opened = MembershipLog(open_room)
    body = MembershipChange(
        action=Action.CREATE, target=uid(ALICE), role=Role.ADMIN, nonce=b"o" * 16, open=True
    )
    created = sealed(ALICE, Kind.MEMBERSHIP, encode_membership(body), room=open_room)
    assert offer(opened, created) is Ruling.ALLOWED
    join = MembershipChange(action=Action.JOIN, target=uid(CAROL))
    joined = sealed(CAROL, Kind.MEMBERSHIP, encode_membership(join), room=open_room)
    assert offer(opened, joined) is Ruling.ALLOWED
    assert uid(CAROL) in opened.state.members


def test_a_non_admin_waits_and_a_forged_create_is_refused() -> None:
    """ADD/KICK/ROLE by a non-admin may be allowed by a ROLE still on its way: NOT_YET; a
    CREATE that does not match the room id, or a second one, never."""
    log = MembershipLog(ROOM)
    assert offer(log, event(ALICE, Action.ADD, BOB)) is Ruling.NOT_YET  # CREATE not here yet
    assert offer(log, create()) is Ruling.ALLOWED
    assert offer(log, create()) is Ruling.NEVER
    assert offer(log, event(BOB, Action.CREATE, BOB, role=Role.ADMIN, nonce=NONCE)) is Ruling.NEVER
    assert offer(log, event(ALICE, Action.ADD, BOB)) is Ruling.ALLOWED
    assert offer(log, event(BOB, Action.ADD, CAROL)) is Ruling.NOT_YET
    assert offer(log, event(BOB, Action.KICK, ALICE)) is Ruling.NOT_YET
    assert set(log.state.members) == {uid(ALICE), uid(BOB)}


def test_non_members_of_a_group_wait_and_gossip_drops_what_may_never_be() -> None:
    state = RoomState(room=ROOM, created=True, members={uid(ALICE): Role.ADMIN})
    stranger = sealed(CAROL, Kind.MESSAGE, b"hi")
    assert writer_ruling(state, stranger, direct_with_local=False) is Ruling.NOT_YET
    assert writer_ruling(None, stranger, direct_with_local=False) is Ruling.NOT_YET
    assert writer_ruling(None, stranger, direct_with_local=True) is Ruling.ALLOWED
    assert gossip_ruling(state, stranger) is Ruling.NOT_YET
    assert gossip_ruling(state, event(ALICE, Action.ADD, BOB)) is Ruling.NEVER
    assert gossip_ruling(None, stranger) is Ruling.ALLOWED  # left to admission
    direct = direct_room_state(uid(ALICE), uid(BOB))
    assert gossip_ruling(direct, sealed(CAROL, Kind.MESSAGE, b"x", room=direct.room)) is (
        Ruling.NEVER
    )


def test_deferrals_are_bounded_per_sender_and_come_back_with_time() -> None:
    budget = DeferralBudget(DeferralPolicy(burst=3, per_s=1, max_senders=2))
    carol, dave, erin = uid(CAROL), uid(DAVE), UserId(b"e" * 32)
    assert [budget.take(carol, 0) for _ in range(4)] == [True, True, True, False]
    assert budget.take(dave, 0)  # another sender has its own bucket
    assert not budget.take(carol, 999)
    assert budget.take(carol, 1000)  # one per second comes back
    assert budget.take(erin, 1000)  # a third sender: the least recent (dave) is forgotten
    assert [budget.take(dave, 1000) for _ in range(4)] == [True, True, True, False]


# --- §12.1: bad bodies ------------------------------------------------------------------------


def test_an_oversized_body_is_ignored_by_the_fold_not_raised() -> None:
    """TooLarge belongs to the remote-error family, and the fold ignores the whole family (a
    600-byte body once escaped it and ended the node)."""
    big = sealed(ALICE, Kind.MEMBERSHIP, b"\x86" + b"\x00" * 600)
    with pytest.raises(TooLarge):
        decode_membership(big.body)
    assert issubclass(TooLarge, RemoteProtocolError)
    state = fold(ROOM, [create(), big])
    assert state.ignored == 1 and set(state.members) == {uid(ALICE)}


# --- §12.3-12.4: incremental state, late events, bounds ---------------------------------------


def test_a_batch_in_order_costs_one_step_per_event_however_long_the_history() -> None:
    """2,300 events held, then 256 more in order: 256 fold steps, not 256 re-folds."""
    limits = MembershipLimits(max_events_per_room=10_000, max_events_per_sender=10_000)
    users = [UserId(i.to_bytes(4, "big") * 8) for i in range(1, 1300)]
    held = [create()]
    # 256 stay; the others come and go, so the group stays under its 1,024 members (§30.2)
    for action, user in [(Action.ADD, u) for u in users[:256]] + [
        (action, u) for u in users[256:] for action in (Action.ADD, Action.KICK)
    ]:
        change = MembershipChange(action=action, target=user)
        held.append(sealed(ALICE, Kind.MEMBERSHIP, encode_membership(change)))
    del held[2300:]
    log = MembershipLog.load(ROOM, held, limits=limits)
    assert len(log) == 2300
    before = log.steps
    for user in users[:256]:
        change = MembershipChange(action=Action.ROLE, target=user, role=Role.ADMIN)
        offer(log, sealed(ALICE, Kind.MEMBERSHIP, encode_membership(change)))
    assert log.steps - before == 256
    assert log.state.members == fold(ROOM, sorted(held, key=lambda e: e.order_key)).members | {
        u: Role.ADMIN for u in users[:256]
    }


def test_a_late_event_refolds_only_from_the_checkpoint_before_it() -> None:
    limits = MembershipLimits(checkpoint_every=8)
    log = MembershipLog(ROOM, limits=limits)
    events = [create(wall_ms=1000)]
    events += [event(ALICE, Action.ADD, BOB, wall_ms=2000)]
    # bob is made admin and member by turns (a role held already is not given again, §30.2)
    events += [
        event(ALICE, Action.ROLE, BOB, role=Role(1 - i % 2), wall_ms=3000 + i) for i in range(31)
    ]
    late = event(ALICE, Action.KICK, BOB, wall_ms=3025)  # sorts among the last few
    bob_adds = event(BOB, Action.ADD, CAROL, wall_ms=4000)
    for envelope in [*events, bob_adds]:
        assert offer(log, envelope) is Ruling.ALLOWED
    before = log.steps
    assert offer(log, late) is Ruling.ALLOWED
    # the fold to its place starts at checkpoint 3 (24 events), the re-fold there too
    assert log.steps - before <= 2 * (len(log) - 24)
    # bob was kicked before he added carol: that ADD is held but has no effect any more
    reference = fold(ROOM, sorted([*events, bob_adds, late], key=lambda e: e.order_key))
    assert log.state.members == reference.members == {uid(ALICE): Role.OWNER}


def test_membership_events_are_bounded_per_sender_and_per_room() -> None:
    log = MembershipLog(
        ROOM, limits=MembershipLimits(max_events_per_room=6, max_events_per_sender=4)
    )
    offer(log, create(wall_ms=1))
    offer(log, event(ALICE, Action.ADD, BOB, wall_ms=2))
    offer(log, event(ALICE, Action.ADD, CAROL, wall_ms=3))
    offer(log, event(ALICE, Action.ADD, DAVE, wall_ms=4))
    with pytest.raises(MembershipLimit):
        offer(log, event(ALICE, Action.KICK, DAVE, wall_ms=5))
    offer(log, event(BOB, Action.LEAVE, BOB, wall_ms=6))
    offer(log, event(CAROL, Action.LEAVE, CAROL, wall_ms=7))
    with pytest.raises(MembershipLimit):
        offer(log, event(DAVE, Action.LEAVE, DAVE, wall_ms=8))
    assert len(log) == 6 and set(log.state.members) == {uid(ALICE), uid(DAVE)}
