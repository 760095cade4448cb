"""ReceiptService (node/api/receipts.py): the messages it keeps from the feed's render for the
acks and receipt frames that name them next, bounded by count and by bytes, so a peer's large
messages cannot make a home hold more than SHOWN_BYTES of them; and the receipt frames' render,
which tells only statuses still current, with their aggregate (SPEC §16.4)."""

from __future__ import annotations

from typing import cast

import pytest

from hearthmesh.node.api.receipts import SHOWN_BYTES, SHOWN_KEPT, ReceiptService, _current
from hearthmesh.node.clock import SystemClock
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, Envelope, Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    decode_receipt,
    encode_receipt,
)
from hearthmesh.storage.api import DeliveryStatus, StatusRecord
from hearthmesh.storage.memory import MemoryStore

from ..storage.helpers import make_envelope
from .test_inbox import ADMIN, MEMBER, OURS, PEER, arrival, change, make_inbox, sealed, uid


def _service() -> ReceiptService:
    # `shown` keeps envelopes in memory only: it asks the node nothing
    return ReceiptService(cast(Node, None), SystemClock())


def test_the_messages_kept_for_acks_are_bounded_by_bytes() -> None:
    receipts = _service()
    large = [make_envelope(seq=i, body=bytes(MAX_BODY_BYTES)) for i in range(1, 101)]
    for envelope in large:
        receipts.shown(envelope)
    sizes = [len(e.wire) + len(e.body) for e in large]
    assert SHOWN_BYTES - max(sizes) < receipts.shown_bytes <= SHOWN_BYTES  # the newest that fit


def test_the_messages_kept_for_acks_are_bounded_in_number_and_counted_once() -> None:
    receipts = _service()
    small = [make_envelope(seq=i) for i in range(1, SHOWN_KEPT + 11)]
    for envelope in small:
        receipts.shown(envelope)
    receipts.shown(small[-1])  # shown again (a replay): kept once
    assert receipts.shown_bytes == sum(len(e.wire) + len(e.body) for e in small[-SHOWN_KEPT:])


# --- the receipt frames' render (`_current`) -------------------------------------------------


class _StatusReads(MemoryStore):
    """Counts the render's status reads: one recipient's by key, or a scan of a message's."""

    def __init__(self) -> None:
        super().__init__()
        self.keys = 0
        self.scans = 0

    def status(self, message_id: bytes, recipient: bytes) -> DeliveryStatus | None:
        self.keys += 1
        return super().status(message_id, recipient)

    def statuses(self, message_id: bytes) -> list[StatusRecord]:
        self.scans += 1
        return super().statuses(message_id)


DIRECT = {uid(OURS), uid(MEMBER)}
"""Members as a direct room has them: the receipt's sender is the one other."""
THREE = {uid(OURS), uid(MEMBER), uid(ADMIN)}


def _receipt(status: ReceiptStatus, seq: int, *named: Envelope) -> Envelope:
    body = encode_receipt(Receipt(status=status, message_ids=tuple(e.message_id for e in named)))
    return sealed(MEMBER, seq, kind=Kind.RECEIPT, body=body, content_type=RECEIPT_CONTENT_TYPE)


def _ours_credited(
    store: MemoryStore, *statuses: ReceiptStatus
) -> tuple[list[Envelope], list[Envelope]]:
    """Our two messages, and MEMBER's receipts of both, one per status, stored and credited."""
    inbox = make_inbox()
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    inbox.accept(
        store, [arrival(e) for e in [*setup, change(3, Action.ADD, MEMBER)]], now_ms=0, peer=PEER
    )
    ours = [sealed(OURS, 1), sealed(OURS, 2)]
    inbox.accept(store, [arrival(e) for e in ours], now_ms=0, from_sibling=True)
    receipts = [_receipt(status, seq, *ours) for seq, status in enumerate(statuses, 1)]
    for receipt in receipts:
        inbox.accept(store, [arrival(receipt)], now_ms=0, peer=PEER)
    return ours, receipts


def _told(
    store: MemoryStore, receipt: Envelope, members: set[UserId]
) -> list[tuple[bytes, int, int]]:
    changes = _current(store, uid(OURS), receipt, decode_receipt(receipt.body), members, {})
    assert all(c.recipient == uid(MEMBER) and c.room == receipt.room for c in changes)
    return [(c.message_id, c.status, c.aggregate) for c in changes]


def test_a_direct_rooms_receipt_frames_read_each_status_by_its_key() -> None:
    """The one recipient's status is the aggregate: read by key, no message's statuses scanned
    (the scan and aggregate were a third of a receipt's render, ~25 messages a receipt)."""
    store = _StatusReads()
    ours, [receipt] = _ours_credited(store, ReceiptStatus.DELIVERED)
    store.keys = store.scans = 0
    delivered = ReceiptStatus.DELIVERED
    assert _told(store, receipt, DIRECT) == [(e.message_id, delivered, delivered) for e in ours]
    assert (store.keys, store.scans) == (2, 0)


def test_a_groups_receipt_frames_aggregate_over_every_other_member() -> None:
    """ADMIN has no status yet: the aggregate is SENT (SPEC §16.4), read from every status."""
    store = _StatusReads()
    ours, [receipt] = _ours_credited(store, ReceiptStatus.DELIVERED)
    store.keys = store.scans = 0
    expected = [(e.message_id, ReceiptStatus.DELIVERED, ReceiptStatus.SENT) for e in ours]
    assert _told(store, receipt, THREE) == expected
    assert store.scans == 2


@pytest.mark.parametrize("members", [DIRECT, THREE], ids=["direct", "group"])
def test_a_receipt_overtaken_before_its_render_tells_nothing(members: set[UserId]) -> None:
    """Read credited before delivered was rendered: the delivered receipt's frames are not
    sent (a client would see the tick go back), the read one's are."""
    store = _StatusReads()
    ours, [delivered, read] = _ours_credited(store, ReceiptStatus.DELIVERED, ReceiptStatus.READ)
    assert _told(store, delivered, members) == []
    aggregate = ReceiptStatus.READ if members == DIRECT else ReceiptStatus.SENT
    assert _told(store, read, members) == [
        (e.message_id, ReceiptStatus.READ, aggregate) for e in ours
    ]
