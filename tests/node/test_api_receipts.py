"""The messages ReceiptService keeps from the feed's render for the acks and receipt frames
that name them next (node/api/receipts.py): bounded by count and by bytes, so a peer's large
messages cannot make a home hold more than SHOWN_BYTES of them."""

from __future__ import annotations

from typing import cast

from hearthmesh.node.api.receipts import SHOWN_BYTES, SHOWN_KEPT, ReceiptService
from hearthmesh.node.clock import SystemClock
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import MAX_BODY_BYTES

from ..storage.helpers import make_envelope


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
