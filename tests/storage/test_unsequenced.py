"""A RECEIPT takes no place in its sender's numbering in the store (SPEC §8.5): the highest
number per sender and the by-number index (SPEC §26.4) leave it out; history keeps it."""

from __future__ import annotations

from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.envelope import Kind
from hearthmesh.storage.api import AppendRequest, AppendResult
from hearthmesh.storage.store import KvStore

from .helpers import ROOM_A, make_envelope


def test_a_receipt_is_stored_but_not_numbered(store: KvStore) -> None:
    message = make_envelope(seq=1, wall_ms=1_000)
    receipts = [
        make_envelope(seq=UNSEQUENCED, wall_ms=wall_ms, kind=Kind.RECEIPT)
        for wall_ms in (2_000, 3_000)  # two of one device: the same number, two slots
    ]
    results = store.append_many([AppendRequest(envelope=e) for e in (message, *receipts)])
    assert results == [AppendResult.STORED] * 3
    device = message.sender_device
    assert store.last_seq(ROOM_A, device) == 1  # the sender resumes its numbering at 2
    assert [e.envelope.message_id for e in store.sender_events(ROOM_A, device, 1, 256)] == [
        message.message_id
    ]
    assert store.sender_events(ROOM_A, device, UNSEQUENCED - 255, UNSEQUENCED) == []
    for receipt in receipts:
        stored = store.get_event(receipt.message_id)
        assert stored is not None and stored.envelope.seq == UNSEQUENCED
