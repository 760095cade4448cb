"""Bodies of stored envelopes are read with the whole remote-error family caught (SPEC §11.8):
a body over its decoder's limit (TooLarge, not MalformedMessage) is stored as sent and changes
nothing, instead of failing the transaction that stores the batch it came in."""

from __future__ import annotations

from hearthmesh.node.rooms.contact_events import apply_contact_event
from hearthmesh.node.rooms.receipt_credit import credit_receipt
from hearthmesh.protocol.content import CONTACT_CONTENT_TYPE
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.receipts import RECEIPT_CONTENT_TYPE
from hearthmesh.storage.memory import MemoryStore

from ..storage.helpers import USER_A, USER_B, make_envelope

OVERSIZED = b"\x00" * 60_000


def test_an_oversized_receipt_credits_nothing() -> None:
    store = MemoryStore()
    receipt = make_envelope(kind=Kind.RECEIPT, content_type=RECEIPT_CONTENT_TYPE, body=OVERSIZED)
    credit_receipt(store, UserId(USER_B), receipt, now_ms=1)


def test_an_oversized_contact_event_changes_nothing() -> None:
    store = MemoryStore()
    event = make_envelope(content_type=CONTACT_CONTENT_TYPE, body=OVERSIZED)
    apply_contact_event(store, UserId(USER_B), event, now_ms=1)
    assert store.get_profile(UserId(USER_A)) is None
