"""A Hypothesis state machine over the authority fold (SPEC §12.2-12.3).

One set of MEMBERSHIP events per run (valid and invalid, from admins, members and strangers,
with clashing clocks) is delivered in an order Hypothesis chooses; an event answered NOT_YET goes
back to be delivered again later, as a sender's outbox would retry it. Checked throughout: the
incremental state equals the fold of what is held, in which no non-admin ever changed
membership; a direct room never changes; and once every retry is spent, the state is the fold of
the whole set in history order, whatever the delivery order was.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from hearthmesh.protocol.authority import Ruling, membership_ruling, writer_ruling
from hearthmesh.protocol.envelope import Envelope, Kind, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.protocol.invite_record import encode_invite_nonce
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
from tests.conftest import examples

KEYS = [keypair_from_seed(bytes([i + 1]) * 32) for i in range(4)]
USERS = [UserId(key.public) for key in KEYS]
NONCE = b"m" * 16
ROOM = group_room_id(USERS[0], NONCE)
DIRECT = direct_room_state(USERS[0], USERS[1])


@dataclass(frozen=True)
class Spec:
    sender: int
    action: Action
    target: int
    role: Role
    open: bool
    wall_ms: int


specs = st.builds(
    Spec,
    sender=st.sampled_from([0, 0, 0, 1, 1, 2, 3]),  # the admin often: conflicts need power
    action=st.sampled_from([*Action, Action.ADD, Action.ADD, Action.ROLE, Action.KICK]),
    target=st.integers(0, 3),
    role=st.sampled_from(Role),
    open=st.booleans(),
    wall_ms=st.integers(0, 40),
)


def _nonce(spec: Spec, n: int) -> bytes:
    """Invites (SPEC §30.3) of two digests, so ADDs, INVITEs and REVOKEs meet and clash."""
    digest = bytes([n % 2]) * 16
    match spec.action:
        case Action.INVITE:
            return encode_invite_nonce(digest, spec.wall_ms + 20, 1 + int(spec.open))
        case Action.REVOKE:
            return digest
        case Action.ADD:
            return digest if spec.open else b""
        case Action.HISTORY:
            return (5).to_bytes(2, "big")
    return b""


def make(spec: Spec, n: int, *, room: bytes = ROOM) -> Envelope:
    """The event `spec` describes, numbered `n` (per run: runs must be reproducible)."""
    creating = spec.action is Action.CREATE
    change = MembershipChange(
        action=spec.action,
        target=USERS[spec.target],
        role=spec.role,
        nonce=NONCE if creating else _nonce(spec, n),
        open=spec.open if creating else False,
        name="shared" if spec.action is Action.HISTORY else "",
    )
    return seal(
        KEYS[spec.sender],
        kind=Kind.MEMBERSHIP,
        room=room,  # type: ignore[arg-type]
        sender_user=USERS[spec.sender],
        seq=n,
        hlc=Timestamp(wall_ms=spec.wall_ms, counter=n % 3),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=encode_membership(change),
    )


def admin_checked_fold(events: list[Envelope]) -> RoomState:
    """The fold of `events` in history order, asserting who changed what at each step."""
    state = RoomState(room=ROOM)
    for envelope in sorted(events, key=lambda e: e.order_key):
        change = decode_membership(envelope.body)
        sender = envelope.sender_user
        was_admin = state.rank(sender) >= Role.ADMIN
        before = dict(state.members)
        if state.apply_change(sender, change, at_ms=envelope.hlc.wall_ms) and change.action not in (
            Action.CREATE,
            Action.JOIN,
            Action.LEAVE,
        ):
            assert was_admin, "a non-admin changed membership"
        if change.action in (Action.JOIN, Action.LEAVE) and state.members != before:
            assert change.target == sender, "someone joined or left for another"
    return state


class AuthorityFold(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = MembershipLog(ROOM, limits=MembershipLimits(checkpoint_every=3))
        self.pending: list[Envelope] = []
        self.everything: list[Envelope] = []
        self.held: list[Envelope] = []
        self.numbers = itertools.count(1)

    @initialize(
        creator_wall_ms=st.integers(0, 40),
        open_=st.booleans(),
        adds_ms=st.lists(st.integers(0, 40), min_size=2, max_size=2),
        others=st.lists(specs, min_size=1, max_size=24),
    )
    def events(
        self, creator_wall_ms: int, open_: bool, adds_ms: list[int], others: list[Spec]
    ) -> None:
        creator = Spec(0, Action.CREATE, 0, Role.ADMIN, open_, creator_wall_ms)
        # the admin adds two users, so most runs have members whose fate events dispute
        adds = [Spec(0, Action.ADD, i + 1, Role.MEMBER, False, ms) for i, ms in enumerate(adds_ms)]
        everything = [creator, *adds, *others]
        self.everything = [make(spec, next(self.numbers)) for spec in everything]
        self.pending = list(self.everything)

    def _offer(self, envelope: Envelope) -> Ruling:
        change = decode_membership(envelope.body)
        ruling = membership_ruling(self.log, envelope, change)
        if ruling is Ruling.ALLOWED:
            self.log.add(envelope, change)
            self.held.append(envelope)
        return ruling

    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        if not self.pending:
            return
        envelope = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        if self._offer(envelope) is Ruling.NOT_YET:
            self.pending.append(envelope)  # the sender retries it later

    @rule(spec=specs)
    def a_direct_room_never_changes(self, spec: Spec) -> None:
        envelope = make(spec, next(self.numbers), room=DIRECT.room)
        change = decode_membership(envelope.body)
        assert writer_ruling(DIRECT, envelope, direct_with_local=False, change=change) is (
            Ruling.NEVER
        )
        assert DIRECT.members == {USERS[0]: Role.MEMBER, USERS[1]: Role.MEMBER}

    @invariant()
    def incremental_state_is_the_fold_of_what_is_held(self) -> None:
        reference = admin_checked_fold(self.held)
        assert self.log.state.members == reference.members
        assert (self.log.state.created, self.log.state.open) == (reference.created, reference.open)

    def teardown(self) -> None:
        progress = True
        while progress:  # every retry, until none is taken any more
            progress = False
            for envelope in list(self.pending):
                if self._offer(envelope) is not Ruling.NOT_YET:
                    self.pending.remove(envelope)
                    progress = True
        whole = admin_checked_fold(self.everything)
        assert self.log.state.members == whole.members, "delivery order changed the outcome"
        in_order = fold(ROOM, sorted(self.everything, key=lambda e: e.order_key))
        assert whole.members == in_order.members


@pytest.mark.hypothesis  # `make fuzz` selects it: no @given marks it
def test_any_delivery_order_gives_one_state_and_only_admins_change_membership() -> None:
    run_state_machine_as_test(
        AuthorityFold,
        settings=settings(max_examples=examples(150), stateful_step_count=40, deadline=None),
    )
