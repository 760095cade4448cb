"""Crediting and refusing receipts with our recent sends in hand (node/rooms/receipt_credit.py,
node/delivery/sent_in_hand.py): the store still decides what is held, so a receipt is judged
and credited exactly as with nothing in hand (SPEC §16.2.3, §16.3.1), for named messages that
are others', unknown here, recalled or in another room; only the decode of ours is spared."""

from __future__ import annotations

import pytest

from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.membership import (
    Action,
)
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.storage import records
from hearthmesh.storage.store import KvStore

from .test_inbox import (
    ADMIN,
    GROUP,
    MEMBER,
    NONCE,
    OURS,
    PEER,
    arrival,
    change,
    make_inbox,
    sealed,
    uid,
)
from .test_inbox import store as store

OTHER_NONCE = b"\x02" * 16
OTHER_ROOM = RoomId(group_room_id(uid(ADMIN), OTHER_NONCE))


def _receipt(*named: Envelope, room_of: Envelope | None = None) -> Envelope:
    """MEMBER's addressed DELIVERED receipt naming `named`, in GROUP or in `room_of`'s room."""
    body = encode_receipt(
        Receipt(status=ReceiptStatus.DELIVERED, message_ids=tuple(e.message_id for e in named))
    )
    room = GROUP if room_of is None else room_of.room
    return sealed(
        MEMBER,
        UNSEQUENCED,
        kind=Kind.RECEIPT,
        body=body,
        content_type=RECEIPT_CONTENT_TYPE,
        room=room,
    )


class _World:
    """GROUP (ADMIN, OURS, MEMBER) and OTHER_ROOM (the same three) with our messages and
    ADMIN's stored; `ours` sent by our home and in hand, one of them recalled, and one in
    hand that the store never took."""

    def __init__(self, store: KvStore) -> None:
        self.store = store
        self.sent = SentInHand()
        self.inbox = make_inbox(sent=self.sent)
        setup = []
        for room, nonce in ((GROUP, NONCE), (OTHER_ROOM, OTHER_NONCE)):
            steps = ((1, Action.CREATE, ADMIN), (2, Action.ADD, OURS), (3, Action.ADD, MEMBER))
            setup += [change(n, a, t, room=room, nonce=nonce) for n, a, t in steps]
        self.ours, self.recalled, self.unstored = (sealed(OURS, n) for n in (1, 2, 3))
        self.admins = sealed(ADMIN, 4)
        self.admins_elsewhere = sealed(ADMIN, 4, room=OTHER_ROOM)
        stored = [*setup, self.ours, self.recalled, self.admins, self.admins_elsewhere]
        outcome = self.inbox.accept(store, [arrival(e) for e in stored], now_ms=0, peer=PEER)
        assert all(r.status is AckStatus.STORED for r in outcome.results)
        assert store.withdraw(self.recalled.message_id, b"\x01" * 32, uid(OURS))
        for envelope in (self.ours, self.recalled, self.unstored):
            self.sent.sent(envelope)
        # (a real recall drops it from the hand: kept here to show the store decides)

    def deliver(self, receipt: Envelope) -> tuple[AckStatus, int]:
        outcome = self.inbox.accept(self.store, [arrival(receipt)], now_ms=7, peer=PEER)
        (result,) = outcome.results
        return result.status, result.code

    def credited(self, message: Envelope) -> list[tuple[bytes, int]]:
        return [(s.recipient, int(s.status)) for s in self.store.statuses(message.message_id)]


DELIVERED = [(uid(MEMBER), int(ReceiptStatus.DELIVERED))]
STORED = (AckStatus.STORED, 0)
NOT_ADDRESSED = (AckStatus.REJECTED, int(ErrorCode.NOT_ADDRESSED))


def test_our_message_in_hand_and_held_is_credited_without_a_decode(
    store: KvStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _World(store)
    decoded: list[bytes] = []
    decode = records.decode_envelope_at

    def counting(table: object, key: bytes, value: bytes) -> Envelope:
        decoded.append(value)
        return decode(table, key, value)  # type: ignore[arg-type]

    monkeypatch.setattr("hearthmesh.storage.history.decode_envelope_at", counting)
    assert world.deliver(_receipt(world.ours, world.admins)) == STORED
    assert world.credited(world.ours) == DELIVERED
    assert world.credited(world.admins) == []  # not ours: nothing to credit
    assert decoded == [world.admins.wire]  # ours came from the hand


def test_a_receipt_naming_only_others_messages_is_refused_though_ours_are_in_hand(
    store: KvStore,
) -> None:
    world = _World(store)
    assert world.deliver(_receipt(world.admins)) == NOT_ADDRESSED


def test_ours_in_hand_but_not_held_neither_answer_the_refusal_nor_are_credited(
    store: KvStore,
) -> None:
    """Recalled (its body purged) or never stored here: the hand does not make them held."""
    world = _World(store)
    for gone in (world.recalled, world.unstored):
        assert world.deliver(_receipt(gone, world.admins)) == NOT_ADDRESSED
        assert world.deliver(_receipt(gone)) == STORED  # names nothing held: not judged
        assert world.credited(gone) == []


def test_ours_in_hand_named_by_a_receipt_of_another_room_is_not_credited(store: KvStore) -> None:
    world = _World(store)
    elsewhere = _receipt(world.ours, world.admins_elsewhere, room_of=world.admins_elsewhere)
    assert world.deliver(elsewhere) == NOT_ADDRESSED  # none of its room's named ones is ours
    assert world.deliver(_receipt(world.ours, room_of=world.admins_elsewhere)) == STORED
    assert world.credited(world.ours) == []
