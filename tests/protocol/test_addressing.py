"""Receipts are addressed, unsequenced and never gossiped (SPEC §8.5, §16.2.3), or in the
broadcast form of the revision before, taken from an older node (SPEC §20.7)."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.addressing import (
    ADDRESSED_KINDS,
    UNSEQUENCED,
    check_gossiped,
    check_sequencing,
    is_addressed,
    is_gossiped,
    is_sequenced,
)
from hearthmesh.protocol.arrival import ArrivalRules, Verdict
from hearthmesh.protocol.envelope import MAX_SEQ, Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode, MalformedMessage, NotAddressed
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.protocol.membership import RoomState
from hearthmesh.protocol.membership_log import MembershipLog
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.protocol.release import SenderReleases
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.standing import OFFENCE_CODES

KEY = keypair_from_seed(b"\x09" * 32)
ROOM = RoomId(b"\x0a" * 32)


def _envelope(kind: Kind, seq: int, room: RoomId = ROOM) -> Envelope:
    body = encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=(b"\x01" * 32,)))  # type: ignore[arg-type]
    return seal(
        KEY,
        kind=kind,
        room=room,
        sender_user=UserId(KEY.public),
        seq=seq,
        hlc=Timestamp(wall_ms=1_000 + seq % 1000, counter=0),
        content_type=RECEIPT_CONTENT_TYPE if kind is Kind.RECEIPT else "text/plain",
        body=body,
    )


def test_only_a_receipt_or_a_room_key_may_carry_the_unsequenced_number() -> None:
    assert UNSEQUENCED == MAX_SEQ
    check_sequencing(_envelope(Kind.RECEIPT, UNSEQUENCED))
    check_sequencing(_envelope(Kind.ROOM_KEY, UNSEQUENCED))  # addressed-room-keys (§27.5.3)
    check_sequencing(_envelope(Kind.ROOM_KEY, 4))  # the form before (§20.7)
    assert is_addressed(_envelope(Kind.ROOM_KEY, UNSEQUENCED))
    assert not is_addressed(_envelope(Kind.ROOM_KEY, 4))
    check_sequencing(_envelope(Kind.RECEIPT, 3))  # the broadcast form of revision 0 (§20.7)
    check_sequencing(_envelope(Kind.MESSAGE, 7))
    assert not is_sequenced(_envelope(Kind.RECEIPT, UNSEQUENCED))
    assert is_addressed(_envelope(Kind.RECEIPT, UNSEQUENCED))
    assert is_sequenced(_envelope(Kind.RECEIPT, 3)) and not is_addressed(_envelope(Kind.RECEIPT, 3))
    assert is_sequenced(_envelope(Kind.MESSAGE, 7))
    with pytest.raises(MalformedMessage):
        check_sequencing(_envelope(Kind.MESSAGE, UNSEQUENCED))


def test_an_unsequenced_message_is_refused_malformed_even_by_a_relay() -> None:
    rules = ArrivalRules({UserId(b"\x55" * 32)})
    for recipient in (UserId(b"\x55" * 32), UserId(b"\x66" * 32)):  # ours, then relayed
        decision = rules.decide(
            _envelope(Kind.MESSAGE, UNSEQUENCED),
            recipient=recipient,
            device_listed=None,
            rooms=_NoRooms(),
            now_ms=0,
        )
        assert decision.verdict is Verdict.REJECT and decision.result is not None
        assert decision.result.code == ErrorCode.MALFORMED


def test_a_sequenced_receipt_of_the_revision_before_is_relayed_not_refused() -> None:
    """An older node's receipt (SPEC §20.7): no refusal before the room's rules."""
    rules = ArrivalRules({UserId(b"\x55" * 32)})
    decision = rules.decide(
        _envelope(Kind.RECEIPT, 3),
        recipient=UserId(b"\x66" * 32),
        device_listed=None,
        rooms=_NoRooms(),
        now_ms=0,
    )
    assert decision.verdict is Verdict.RELAY


def test_an_addressed_receipt_never_travels_on_gossip_and_the_refusal_is_charged() -> None:
    with pytest.raises(NotAddressed) as raised:
        check_gossiped(_envelope(Kind.RECEIPT, UNSEQUENCED))
    assert raised.value.code == ErrorCode.NOT_ADDRESSED and int(ErrorCode.NOT_ADDRESSED) == 16
    assert ErrorCode.NOT_ADDRESSED in OFFENCE_CODES
    check_gossiped(_envelope(Kind.MESSAGE, 1))
    check_gossiped(_envelope(Kind.RECEIPT, 2))  # the broadcast form goes to every member


def test_an_unsequenced_receipt_goes_to_the_app_once_as_it_is_stored_and_leaves_no_gap() -> None:
    releases = SenderReleases()
    receipt = _envelope(Kind.RECEIPT, UNSEQUENCED)
    assert releases.offer(receipt).released == [receipt]  # no sender resumed, nothing waits
    assert releases.offer(receipt, new=False).released == []  # a duplicate: told once
    assert releases.held() == 0 and releases.gaps() == []
    assert releases.released_before((ROOM, KEY.public), UNSEQUENCED)  # type: ignore[arg-type]


class _NoRooms:
    """No room is known here: the sequencing check comes before any room is read."""

    def state(self, room: RoomId) -> RoomState | None:
        raise AssertionError("not read")

    def membership_log(self, room: RoomId) -> MembershipLog:
        raise AssertionError("not read")


def test_which_kinds_a_sender_gossips_pinned_kind_by_kind() -> None:
    alice, bob, carol = UserId(KEY.public), UserId(b"\x0b" * 32), UserId(b"\x0c" * 32)
    group = [alice, bob, carol]
    gossiped = {
        Kind.MESSAGE: True,
        Kind.EDIT: True,
        Kind.RECALL: True,
        Kind.REACTION: True,
        Kind.RECEIPT: True,  # the broadcast form (§20.7); the addressed one never, below
        Kind.MEMBERSHIP: False,  # the guaranteed path only (§12.2)
        Kind.PROFILE: True,
        Kind.HOME_RECORD: True,
        Kind.TYPING: True,  # never sealed through the outbox: the rule does not judge it
        Kind.PRESENCE: True,
        Kind.PRIVATE: False,  # its sender's own homes only
        Kind.ROOM_KEY: True,
    }
    assert set(gossiped) == set(Kind)  # a new kind must be pinned here
    for kind, expected in gossiped.items():
        assert is_gossiped(_envelope(kind, 5), group) is expected, kind
    for kind in ADDRESSED_KINDS:  # unsequenced: to some members' homes only (§16.2.3, §27.5.3)
        assert not is_gossiped(_envelope(kind, UNSEQUENCED), group), kind


def test_nothing_of_a_direct_room_is_gossiped() -> None:
    alice, bob = UserId(KEY.public), UserId(b"\x0b" * 32)
    direct = direct_room_id(alice, bob)
    assert not is_gossiped(_envelope(Kind.MESSAGE, 5, direct), [alice, bob])
    assert not is_gossiped(_envelope(Kind.MESSAGE, 5, direct), [bob, alice, alice])  # users
    # the same two users in a group room, or a third member: the group's fan-out
    assert is_gossiped(_envelope(Kind.MESSAGE, 5), [alice, bob])
    assert is_gossiped(_envelope(Kind.MESSAGE, 5, direct), [alice, bob, UserId(b"\x0c" * 32)])
