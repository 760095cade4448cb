"""Receipt bodies, which statuses a receipt justifies, and group aggregation (SPEC §16)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol import receipts as receipts_module
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.canonical import decode_canonical, encode_canonical
from hearthmesh.protocol.content import TEXT_CONTENT_TYPE
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode, MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.protocol.receipts import (
    DELIVERED_RECEIPTS_MAX_MEMBERS,
    MAX_RECEIPT_IDS,
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    address_refusal,
    aggregate_status,
    decode_receipt,
    encode_receipt,
    receipt_updates,
    sends_receipt,
    waits_for_a_commit,
)

ALICE = keypair_from_seed(b"\x01" * 32)
BOB = keypair_from_seed(b"\x02" * 32)
ROOM = RoomId(b"\x07" * 32)


def _env(
    key: object, kind: Kind, body: bytes, room: RoomId = ROOM, ctype: str = "", seq: int = 1
) -> Envelope:
    assert hasattr(key, "public")
    return seal(
        key,  # type: ignore[arg-type]
        kind=kind,
        room=room,
        sender_user=UserId(key.public),
        seq=seq,
        hlc=Timestamp(1_700_000_000_000, 0),
        content_type=ctype or (RECEIPT_CONTENT_TYPE if kind is Kind.RECEIPT else TEXT_CONTENT_TYPE),
        body=body,
    )


def test_receipt_round_trips_and_refuses_bad_bodies() -> None:
    receipt = Receipt(status=ReceiptStatus.READ, message_ids=(MessageId(b"\x01" * 32),))
    assert decode_receipt(encode_receipt(receipt)) == receipt
    for bad in (
        Receipt(status=ReceiptStatus.SENT, message_ids=(MessageId(b"\x01" * 32),)),
        Receipt(status=ReceiptStatus.READ, message_ids=()),
        Receipt(status=ReceiptStatus.READ, message_ids=(MessageId(b"\x01" * 31),)),
        Receipt(status=ReceiptStatus.READ, message_ids=(MessageId(b"\x01" * 32),) * 2),
        Receipt(
            status=ReceiptStatus.READ,
            message_ids=tuple(MessageId(i.to_bytes(32, "big")) for i in range(MAX_RECEIPT_IDS + 1)),
        ),
    ):
        with pytest.raises(MalformedMessage):
            encode_receipt(bad)


def test_a_receipt_body_decoded_again_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its credit as it arrives and its frame each decode it: the second is remembered. What
    raises is parsed (and raises) each time."""
    parses = []
    parse = decode_canonical

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(args[0])
        return parse(*args, **kwargs)

    monkeypatch.setattr(receipts_module, "decode_canonical", counted)
    ids = (MessageId(os.urandom(32)),)  # a body no other test decoded
    body = encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=ids))
    first = decode_receipt(body)
    assert decode_receipt(bytes(bytearray(body))) is first and len(parses) == 1
    sent = encode_canonical([ReceiptStatus.SENT.value, list(ids)])
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            decode_receipt(sent)
    assert len(parses) == 3


@given(st.binary(max_size=200))
def test_arbitrary_receipt_bodies_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_receipt(data)


def test_receipt_counts_only_for_its_own_sender_and_room() -> None:
    mine = _env(ALICE, Kind.MESSAGE, b"hi")
    other_room = _env(ALICE, Kind.MESSAGE, b"elsewhere", room=RoomId(b"\x08" * 32))
    bobs_own = _env(BOB, Kind.MESSAGE, b"bob's")
    body = encode_receipt(
        Receipt(
            status=ReceiptStatus.DELIVERED,
            message_ids=(mine.message_id, other_room.message_id, bobs_own.message_id),
        )
    )
    receipt_env = _env(BOB, Kind.RECEIPT, body)
    originals = {e.message_id: e for e in (mine, other_room, bobs_own)}
    updates = receipt_updates(receipt_env, decode_receipt(body), originals)
    assert [(u.message_id, u.recipient, u.status) for u in updates] == [
        (mine.message_id, UserId(BOB.public), ReceiptStatus.DELIVERED)
    ]


def test_group_aggregate_is_the_lowest_recipient_status() -> None:
    a, b, c = UserId(b"a" * 32), UserId(b"b" * 32), UserId(b"c" * 32)
    assert aggregate_status(a, {a, b, c}, {}) is ReceiptStatus.SENT
    assert aggregate_status(a, {a, b, c}, {b: 3}) is ReceiptStatus.SENT
    assert aggregate_status(a, {a, b, c}, {b: 3, c: 2}) is ReceiptStatus.DELIVERED
    assert aggregate_status(a, {a, b, c}, {b: 3, c: 3}) is ReceiptStatus.READ
    assert aggregate_status(a, {a}, {}) is ReceiptStatus.READ


CAROL = keypair_from_seed(b"\x03" * 32)


def test_a_receipt_is_for_the_homes_of_whose_messages_it_names_and_its_senders_own() -> None:
    """SPEC §16.2.3: bob's receipt of alice's message is for alice's homes and bob's own;
    carol's home refuses it once it holds the message and sees it is not carol's."""
    alice_message = _env(ALICE, Kind.MESSAGE, b"hi")
    carol_message = _env(CAROL, Kind.MESSAGE, b"yo")
    named = (alice_message.message_id,)
    receipt = Receipt(status=ReceiptStatus.READ, message_ids=named)
    envelope = _env(BOB, Kind.RECEIPT, encode_receipt(receipt), seq=UNSEQUENCED)
    held = {alice_message.message_id: alice_message, carol_message.message_id: carol_message}
    alice, bob, carol = (UserId(k.public) for k in (ALICE, BOB, CAROL))
    assert address_refusal(envelope, receipt, alice, held) is None
    assert address_refusal(envelope, receipt, bob, {}) is None  # bob's other home
    refusal = address_refusal(envelope, receipt, carol, held)
    assert refusal is not None and refusal.code == ErrorCode.NOT_ADDRESSED
    assert address_refusal(envelope, receipt, carol, {}) is None  # nothing held: not judged
    elsewhere = _env(ALICE, Kind.MESSAGE, b"hi", room=RoomId(b"\x08" * 32))
    other_room = Receipt(status=ReceiptStatus.READ, message_ids=(elsewhere.message_id,))
    assert address_refusal(envelope, other_room, carol, {elsewhere.message_id: elsewhere}) is None
    both = Receipt(status=ReceiptStatus.READ, message_ids=(named[0], carol_message.message_id))
    assert address_refusal(envelope, both, carol, held) is None  # names one of carol's too


def test_a_receipt_in_the_broadcast_form_of_the_revision_before_is_for_every_member() -> None:
    """SPEC §20.7: an older node's receipt is sequenced and goes to every member, so carol's
    home takes bob's receipt of alice's message, uncharged, and credits nothing from it."""
    alice_message = _env(ALICE, Kind.MESSAGE, b"hi")
    receipt = Receipt(status=ReceiptStatus.READ, message_ids=(alice_message.message_id,))
    broadcast = _env(BOB, Kind.RECEIPT, encode_receipt(receipt), seq=4)
    held = {alice_message.message_id: alice_message}
    assert address_refusal(broadcast, receipt, UserId(CAROL.public), held) is None
    updates = receipt_updates(broadcast, receipt, held)  # alice's homes credit it as ever
    assert [(u.recipient, u.status) for u in updates] == [(UserId(BOB.public), ReceiptStatus.READ)]


def test_only_a_batch_of_receipts_alone_waits_for_a_commit() -> None:
    """SPEC §16.3.3: receipts alone may wait to share the home's next commit; a batch with
    anything else (a message, the ROOM_KEY before a receipt) is taken in at once."""
    assert waits_for_a_commit([Kind.RECEIPT])
    assert waits_for_a_commit(iter([Kind.RECEIPT, Kind.RECEIPT]))
    assert not waits_for_a_commit([Kind.RECEIPT, Kind.MESSAGE])
    assert not waits_for_a_commit([Kind.ROOM_KEY, Kind.RECEIPT])
    assert not waits_for_a_commit([])


def test_a_big_groups_delivered_acks_are_not_sent_and_reads_are() -> None:
    """SPEC §16.2.4: "delivered" travels in rooms of up to DELIVERED_RECEIPTS_MAX_MEMBERS
    members; "read" in every room."""
    limit = DELIVERED_RECEIPTS_MAX_MEMBERS
    assert sends_receipt(ReceiptStatus.DELIVERED, 2)
    assert sends_receipt(ReceiptStatus.DELIVERED, limit)
    assert not sends_receipt(ReceiptStatus.DELIVERED, limit + 1)
    assert sends_receipt(ReceiptStatus.READ, limit + 1)
