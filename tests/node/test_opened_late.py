"""What an envelope opened after it was stored sets off (SPEC §27.11), over a real store: a
RECEIPT whose room key came after it credits nothing while it is ciphertext and credits its
statuses once it opens, as on arrival (an R1 simulation showed such receipts never credited)."""

from __future__ import annotations

from hearthmesh.node.e2ee.opened_late import react_to_opened
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.e2ee.megolm import ENCRYPTED_CONTENT_TYPE, opened_view
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.membership import Action
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.storage.api import DeliveryStatus
from hearthmesh.storage.store import KvStore

from .test_inbox import ADMIN, MEMBER, OURS, PEER, arrival, change, make_inbox, sealed, uid
from .test_inbox import store as store


def test_a_receipt_stored_before_its_room_key_credits_its_statuses_once_it_opens(
    store: KvStore,
) -> None:
    inbox = make_inbox()
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    setup.append(change(3, Action.ADD, MEMBER))
    ours = sealed(OURS, 1, body=b"our words")
    outcome = inbox.accept(store, [arrival(e) for e in [*setup, ours]], now_ms=0, peer=PEER)
    assert all(r.status is AckStatus.STORED for r in outcome.results)
    body = encode_receipt(Receipt(status=ReceiptStatus.DELIVERED, message_ids=(ours.message_id,)))
    held = sealed(
        MEMBER,
        UNSEQUENCED,
        kind=Kind.RECEIPT,
        body=b"\x84\x00\x01",
        content_type=ENCRYPTED_CONTENT_TYPE,
    )

    outcome = inbox.accept(store, [arrival(held)], now_ms=5, peer=PEER)

    assert outcome.results[0].status is AckStatus.STORED

    def credited() -> list[tuple[bytes, DeliveryStatus]]:
        return [(s.recipient, s.status) for s in store.statuses(ours.message_id)]

    assert (uid(MEMBER), DeliveryStatus.DELIVERED) not in credited()  # ciphertext says nothing
    react_to_opened(
        store,
        [opened_view(held, RECEIPT_CONTENT_TYPE, body)],  # its room key came
        users={uid(OURS)},
        now_ms=9,
    )
    assert (uid(MEMBER), DeliveryStatus.DELIVERED) in credited()
