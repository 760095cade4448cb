"""The arrival decision (protocol/arrival.py): every verdict, the follow-ups of a stored
envelope, the ack results fixed around the store, and the memo of stored ids (SPEC §11.2.3,
§11.3.2, §12.2, §12.5)."""

from __future__ import annotations

import itertools

import pytest

from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.arrival import (
    ArrivalRules,
    Decision,
    Reaction,
    RecentlyStored,
    Verdict,
    appended_result,
    direct_partner,
    error_result,
    reaches_the_app,
)
from hearthmesh.protocol.authority import DeferralPolicy
from hearthmesh.protocol.content import CONTACT_CONTENT_TYPE
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.errors import (
    BadSignature,
    ClockSkew,
    ErrorCode,
    QuotaExceeded,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    RoomState,
    direct_room_state,
    encode_membership,
)
from hearthmesh.protocol.membership_log import MembershipLimits, MembershipLog
from hearthmesh.protocol.rooms import direct_room_id, group_room_id

OURS, ADMIN, MEMBER, STRANGER = (keypair_from_seed(bytes([i]) * 32) for i in (1, 2, 3, 4))
NONCE = b"g" * 16
_seq = itertools.count(1)


def uid(key: KeyPair) -> UserId:
    return UserId(key.public)


GROUP = group_room_id(uid(ADMIN), NONCE)
DIRECT = direct_room_id(uid(OURS), uid(MEMBER))
OUR_USER = uid(OURS)
LOCAL = {OUR_USER}


def sealed(
    who: KeyPair,
    room: RoomId = GROUP,
    *,
    kind: Kind = Kind.MESSAGE,
    body: bytes = b"hi",
    content_type: str = "text/plain",
    seq: int | None = None,
) -> Envelope:
    n = next(_seq)
    return seal(
        who,
        kind=kind,
        room=room,
        sender_user=uid(who),
        seq=(UNSEQUENCED if kind is Kind.RECEIPT else n) if seq is None else seq,
        hlc=Timestamp(wall_ms=1_000 + n, counter=0),
        content_type=content_type,
        body=body,
    )


def membership(who: KeyPair, change: MembershipChange, room: RoomId = GROUP) -> Envelope:
    return sealed(
        who,
        room,
        kind=Kind.MEMBERSHIP,
        body=encode_membership(change),
        content_type=MEMBERSHIP_CONTENT_TYPE,
    )


CREATE = MembershipChange(action=Action.CREATE, target=uid(ADMIN), role=Role.ADMIN, nonce=NONCE)


class Rooms:
    """Rooms as held here, from real folds; counts reads so a test sees when none was needed."""

    def __init__(self, limits: MembershipLimits | None = None) -> None:
        self.fixed: dict[RoomId, RoomState] = {}
        self.logs: dict[RoomId, MembershipLog] = {}
        self.limits = limits or MembershipLimits()
        self.reads = 0

    def state(self, room: RoomId) -> RoomState | None:
        self.reads += 1
        log = self.logs.get(room)
        return self.fixed.get(room) if log is None else log.state

    def membership_log(self, room: RoomId) -> MembershipLog:
        return self.logs.get(room) or MembershipLog(room, limits=self.limits)

    def hold(self, *events: Envelope) -> None:
        """Fold `events` (stored, in history order) into their room's log."""
        log = MembershipLog.load(events[0].room, list(events), limits=self.limits)
        self.logs[log.room] = log


def group_with_member() -> Rooms:
    rooms = Rooms()
    rooms.hold(
        membership(ADMIN, CREATE),
        membership(ADMIN, MembershipChange(action=Action.ADD, target=uid(OURS))),
        membership(ADMIN, MembershipChange(action=Action.ADD, target=uid(MEMBER))),
    )
    return rooms


def decide(
    envelope: Envelope,
    rooms: Rooms,
    *,
    rules: ArrivalRules | None = None,
    recipient: UserId = OUR_USER,
    device_listed: bool | None = None,
    now_ms: int = 0,
) -> Decision:
    rules = rules or ArrivalRules(LOCAL)
    return rules.decide(
        envelope, recipient=recipient, device_listed=device_listed, rooms=rooms, now_ms=now_ms
    )


def refused(decision: Decision, status: AckStatus, code: int) -> bool:
    result = decision.result
    return result is not None and (result.status, result.code) == (status, code)


def test_a_member_writes_into_the_group_and_our_user_writes_unasked() -> None:
    rooms = group_with_member()
    assert decide(sealed(MEMBER), rooms) == Decision(verdict=Verdict.STORE)
    rooms.fixed[DIRECT] = direct_room_state(uid(OURS), uid(MEMBER))
    for room in (GROUP, DIRECT):  # our own user is no member to check, in any room known here
        assert decide(sealed(OURS, room), rooms) == Decision(verdict=Verdict.STORE)


def test_our_own_envelope_in_a_room_unknown_here_waits_until_the_room_is_learnt() -> None:
    """Issue 13's race: a linked home must not show a direct room whose members it does not
    know (its id does not name them, our own message does not name the other)."""
    rooms = Rooms()
    for kind in (Kind.MESSAGE, Kind.RECEIPT, Kind.REACTION):
        decision = decide(sealed(OURS, DIRECT, kind=kind), rooms)
        assert decision.verdict is Verdict.DEFER and decision.unknown_room
        assert refused(decision, AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED)
    rooms.fixed[DIRECT] = direct_room_state(uid(OURS), uid(MEMBER))  # the sibling's ROOMS
    assert decide(sealed(OURS, DIRECT), rooms) == Decision(verdict=Verdict.STORE)
    other = decide(sealed(MEMBER, RoomId(b"\x07" * 32)), group_with_member(), device_listed=True)
    assert not other.unknown_room  # someone else's early envelope waits for its fold, not this


def test_ephemeral_kinds_are_never_delivered() -> None:
    for kind in (Kind.TYPING, Kind.PRESENCE):
        decision = decide(sealed(MEMBER, kind=kind), group_with_member())
        assert decision.verdict is Verdict.REJECT
        assert refused(decision, AckStatus.REJECTED, ErrorCode.PROTOCOL)


def test_an_envelope_for_another_user_is_relayed_whoever_sent_it() -> None:
    rooms = Rooms()
    decision = decide(sealed(STRANGER), rooms, recipient=uid(MEMBER), device_listed=False)
    assert decision == Decision(verdict=Verdict.RELAY)
    assert rooms.reads == 0


def test_a_device_the_newest_record_does_not_list_waits_and_is_looked_up() -> None:
    rooms = group_with_member()
    decision = decide(sealed(MEMBER), rooms, device_listed=False)
    assert decision.verdict is Verdict.DEFER and decision.unknown_device
    assert refused(decision, AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED)
    assert decide(sealed(MEMBER), rooms, device_listed=True).verdict is Verdict.STORE


def test_a_direct_room_opens_with_its_first_message_and_takes_no_one_else() -> None:
    rooms = Rooms()
    assert decide(sealed(MEMBER, DIRECT), rooms).verdict is Verdict.STORE  # unknown yet
    rooms.fixed[DIRECT] = direct_room_state(uid(OURS), uid(MEMBER))
    decision = decide(sealed(STRANGER, DIRECT), rooms)
    assert decision.verdict is Verdict.REJECT
    assert refused(decision, AckStatus.REJECTED, ErrorCode.NOT_AUTHORIZED)
    never = decide(membership(MEMBER, CREATE, DIRECT), rooms)
    assert never.verdict is Verdict.REJECT  # a direct room takes no MEMBERSHIP event


def test_a_non_member_waits_within_its_budget_then_is_refused_until_it_refills() -> None:
    rules = ArrivalRules(LOCAL, deferrals=DeferralPolicy(burst=2, per_s=1))
    rooms = group_with_member()

    def verdict(now_ms: int) -> Verdict:
        return decide(sealed(STRANGER), rooms, rules=rules, now_ms=now_ms).verdict

    first = decide(sealed(STRANGER), rooms, rules=rules, now_ms=0)
    assert refused(first, AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED)
    assert verdict(0) is Verdict.DEFER
    last = decide(sealed(STRANGER), rooms, rules=rules, now_ms=999)
    assert last.verdict is Verdict.REJECT
    assert refused(last, AckStatus.REJECTED, ErrorCode.NOT_AUTHORIZED)
    assert verdict(1_999) is Verdict.DEFER  # one token back a second
    assert verdict(1_999) is Verdict.REJECT


def test_our_own_early_membership_change_always_waits() -> None:
    rules = ArrivalRules(LOCAL, deferrals=DeferralPolicy(burst=1, per_s=1))
    rooms = Rooms()  # our ADD of someone before the CREATE we were added by arrived
    early = membership(OURS, MembershipChange(action=Action.ADD, target=uid(MEMBER)))
    assert all(decide(early, rooms, rules=rules).verdict is Verdict.DEFER for _ in range(3))


def test_membership_is_judged_by_the_fold_at_its_place() -> None:
    rooms = Rooms()
    assert decide(membership(ADMIN, CREATE), rooms).verdict is Verdict.STORE
    forged = MembershipChange(action=Action.CREATE, target=uid(STRANGER), nonce=NONCE)
    assert decide(membership(STRANGER, forged), rooms).verdict is Verdict.REJECT
    rooms = group_with_member()
    add = MembershipChange(action=Action.ADD, target=uid(STRANGER))
    assert decide(membership(MEMBER, add), rooms).verdict is Verdict.DEFER  # not an admin yet
    assert decide(membership(ADMIN, add), rooms).verdict is Verdict.STORE


def test_a_bad_membership_body_or_a_full_room_is_refused_with_its_code() -> None:
    bad = decide(sealed(ADMIN, kind=Kind.MEMBERSHIP, body=b"\xff"), Rooms())
    assert bad.verdict is Verdict.REJECT
    assert bad.result is not None and bad.result.code == ErrorCode.MALFORMED
    rooms = Rooms(MembershipLimits(max_events_per_room=1))
    rooms.hold(membership(ADMIN, CREATE))
    add = MembershipChange(action=Action.ADD, target=uid(MEMBER))
    full = decide(membership(ADMIN, add), rooms)
    assert full.verdict is Verdict.REJECT
    assert refused(full, AckStatus.REJECTED, ErrorCode.MEMBERSHIP_LIMIT)


@pytest.mark.parametrize(
    ("envelope", "reactions"),
    [
        (sealed(OURS, kind=Kind.PRIVATE), {Reaction.APPLY_PRIVATE}),
        (sealed(MEMBER, kind=Kind.PRIVATE), set()),  # only our own user's private state
        (sealed(MEMBER, kind=Kind.RECEIPT), {Reaction.CREDIT_RECEIPT}),
        (sealed(OURS, kind=Kind.RECEIPT), {Reaction.CREDIT_RECEIPT}),
        (sealed(MEMBER, content_type=CONTACT_CONTENT_TYPE), {Reaction.APPLY_CONTACT_EVENT}),
        (sealed(OURS, content_type=CONTACT_CONTENT_TYPE), set()),  # our own, sent elsewhere
        (sealed(MEMBER), set()),
        (sealed(MEMBER, kind=Kind.PROFILE), {Reaction.APPLY_PROFILE}),
        (sealed(OURS, kind=Kind.PROFILE), {Reaction.APPLY_PROFILE}),  # from our other device
    ],
    ids=[
        "own-private",
        "others-private",
        "receipt",
        "own-receipt",
        "contact",
        "own-contact",
        "message",
        "profile",
        "own-profile",
    ],
)
def test_what_a_newly_stored_envelope_sets_off(
    envelope: Envelope, reactions: set[Reaction]
) -> None:
    assert ArrivalRules(LOCAL).reactions(envelope) == reactions


def test_a_new_sender_is_released_from_1_in_a_direct_room_else_from_its_first_number() -> None:
    rules = ArrivalRules(LOCAL)
    assert rules.first_seq_if_new(sealed(MEMBER, DIRECT, seq=7)) == 1
    assert rules.first_seq_if_new(sealed(MEMBER, GROUP, seq=7)) == 7
    assert direct_partner(sealed(MEMBER, DIRECT), LOCAL) == uid(OURS)
    assert direct_partner(sealed(OURS, DIRECT), LOCAL) is None  # our own side of it


def test_the_stores_answer_fixes_the_ack() -> None:
    mid = MessageId(b"m" * 32)
    assert appended_result(mid, stored=True, duplicate=False).status is AckStatus.STORED
    assert appended_result(mid, stored=False, duplicate=True).status is AckStatus.DUPLICATE
    conflict = appended_result(mid, stored=False, duplicate=False)
    assert (conflict.status, conflict.code) == (AckStatus.REJECTED, ErrorCode.PROTOCOL)


def test_skew_and_a_full_quota_are_worth_a_retry_other_errors_are_final() -> None:
    mid = MessageId(b"m" * 32)
    skew = error_result(mid, ClockSkew("ahead"))
    assert (skew.status, skew.code) == (AckStatus.DEFERRED, ErrorCode.CLOCK_SKEW)
    quota = error_result(mid, QuotaExceeded("full"))
    assert (quota.status, quota.code) == (AckStatus.DEFERRED, ErrorCode.QUOTA_EXCEEDED)
    bad = error_result(mid, BadSignature("no"))
    assert (bad.status, bad.code) == (AckStatus.REJECTED, ErrorCode.BAD_SIGNATURE)


def test_the_memo_holds_only_what_the_store_answered_holding_and_forgets_the_oldest() -> None:
    recent = RecentlyStored(capacity=2)
    a, b, c, d = (MessageId(bytes([i]) * 32) for i in range(4))
    recent.note(
        [
            DeliveryResult(message_id=a, status=AckStatus.STORED),
            DeliveryResult(message_id=b, status=AckStatus.RELAYED),
            DeliveryResult(message_id=c, status=AckStatus.DUPLICATE),
            DeliveryResult(message_id=d, status=AckStatus.DEFERRED, code=10),
        ]
    )
    assert [recent.seen(m) for m in (a, b, c, d)] == [True, False, True, False]
    recent.note([DeliveryResult(message_id=d, status=AckStatus.STORED)])
    assert [recent.seen(m) for m in (a, c, d)] == [False, True, True]


def test_a_membership_event_meant_for_history_is_stored_before_the_next_is_judged() -> None:
    rooms = Rooms()
    create = decide(membership(ADMIN, CREATE), rooms)
    assert create.verdict is Verdict.STORE and create.store_before_next
    add = MembershipChange(action=Action.ADD, target=uid(MEMBER))
    early = decide(membership(ADMIN, add), rooms)  # before the CREATE is held
    assert early.verdict is Verdict.DEFER and early.store_before_next
    direct = decide(membership(MEMBER, CREATE, DIRECT), rooms)
    assert direct.verdict is Verdict.REJECT and not direct.store_before_next
    assert not decide(sealed(OURS), rooms).store_before_next


def test_private_state_is_released_but_never_shown_to_clients() -> None:
    assert not reaches_the_app(sealed(OURS, kind=Kind.PRIVATE))
    assert reaches_the_app(sealed(OURS)) and reaches_the_app(sealed(MEMBER, kind=Kind.RECEIPT))


def test_a_blocked_users_envelopes_are_acked_as_stored_and_dropped_but_group_membership_kept() -> (
    None
):
    """SPEC §32.3: nothing tells the blocked user; only the group's member list still folds."""
    rooms = group_with_member()
    rules = ArrivalRules(LOCAL, blocked=lambda user: user == uid(MEMBER))
    for envelope in (
        sealed(MEMBER),
        sealed(MEMBER, kind=Kind.PROFILE),
        sealed(MEMBER, DIRECT),
        sealed(MEMBER, DIRECT, kind=Kind.MEMBERSHIP),
    ):
        decision = decide(envelope, rooms, rules=rules)
        assert decision.verdict is Verdict.DISCARD
        assert decision.result == DeliveryResult(
            message_id=envelope.message_id, status=AckStatus.STORED
        )
    leave = membership(MEMBER, MembershipChange(action=Action.LEAVE, target=uid(MEMBER)))
    assert decide(leave, rooms, rules=rules).verdict is not Verdict.DISCARD
    assert decide(sealed(ADMIN), rooms, rules=rules).verdict is Verdict.STORE  # not blocked
    other = decide(sealed(MEMBER), rooms, rules=rules, recipient=uid(STRANGER))
    assert other.verdict is Verdict.RELAY  # a relay keeps it for its own recipient


def test_what_sorts_before_our_users_joining_point_is_history_and_only_in_a_group() -> None:
    """SPEC §8.6: the welcome's events (stored before our ADD is folded) and everything that
    sorts up to our latest ADD are history; what sorts after it is owed in order. A direct room
    has no joining point: both its members are owed everything from its start."""
    rules = ArrivalRules(LOCAL)
    rooms = Rooms()
    create = membership(ADMIN, CREATE)
    before = sealed(ADMIN)
    rooms.hold(create)
    assert rules.before_joining(create, rooms) and rules.before_joining(before, rooms)
    add = membership(ADMIN, MembershipChange(action=Action.ADD, target=OUR_USER))
    rooms.hold(create, add)
    after = sealed(MEMBER)
    assert rules.before_joining(before, rooms) and rules.before_joining(add, rooms)
    assert not rules.before_joining(after, rooms)
    leave = membership(OURS, MembershipChange(action=Action.LEAVE, target=OUR_USER))
    while_away = sealed(ADMIN)
    again = membership(ADMIN, MembershipChange(action=Action.ADD, target=OUR_USER))
    rooms.hold(create, add, leave)
    assert rules.before_joining(while_away, rooms), "not a member: all is history"
    rooms.hold(create, add, leave, again)
    assert rules.before_joining(after, rooms) and rules.before_joining(while_away, rooms)
    assert not rules.before_joining(sealed(ADMIN), rooms)
    rooms.fixed[DIRECT] = direct_room_state(OUR_USER, uid(MEMBER))
    assert not rules.before_joining(sealed(MEMBER, DIRECT), rooms)
    assert not rules.before_joining(sealed(MEMBER, RoomId(b"\x09" * 32)), rooms), "unknown"


def test_a_sender_first_seen_by_history_starts_after_it() -> None:
    rules = ArrivalRules(LOCAL)
    envelope = sealed(ADMIN, seq=7)
    assert rules.first_seq_if_new(envelope, history=True) == 8
    assert rules.first_seq_if_new(envelope) == 7


def test_the_joining_point_follows_each_event_the_log_takes_in() -> None:
    """`MembershipLog.joined_at` keeps its answer only until the next event: the earliest of
    our users who are members, at the newest event that made them one."""
    second = keypair_from_seed(b"\x21" * 32)
    create = membership(ADMIN, CREATE)
    log = MembershipLog.load(GROUP, [create])
    ours = {OUR_USER, uid(second)}
    assert log.joined_at(ours) is None
    assert log.joined_at({uid(ADMIN)}) == create.order_key
    add_second = MembershipChange(action=Action.ADD, target=uid(second))
    first_add = membership(ADMIN, add_second)
    log.add(first_add, add_second)
    assert log.joined_at(ours) == first_add.order_key
    add_ours = MembershipChange(action=Action.ADD, target=OUR_USER)
    log.add(membership(ADMIN, add_ours), add_ours)
    assert log.joined_at(ours) == first_add.order_key, "the earliest of our users"
