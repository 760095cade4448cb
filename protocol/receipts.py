"""Delivery and read receipts (SPEC §16): the RECEIPT envelope body and its rules, sans-I/O.

A receipt is a RECEIPT envelope that a recipient's node seals in the room of the messages it
names, so it is signed by the recipient's device and travels back by the guaranteed path. It
is addressed to the homes of the users whose messages it names and to its sender's own other
homes, never to every member, and takes no place in its sender's sequence
(`protocol.addressing`, SPEC §16.2.3), unless a home it goes to is older: then it has the
broadcast form, sequenced and to every member (SPEC §20.7). Only the recipient itself may
claim a status for itself: the sender's node credits a receipt to the receipt envelope's
`sender_user`, never to a user named in the body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Final

from .addressing import is_addressed
from .canonical import decode_canonical, encode_canonical
from .content import is_user_content
from .envelope import Envelope, Kind, MessageId
from .errors import MalformedMessage, NotAddressed
from .identity import UserId

__all__ = [
    "DELIVERED_RECEIPTS_MAX_MEMBERS",
    "MAX_RECEIPT_IDS",
    "OUT_OF_TURN_KINDS",
    "RECEIPT_CONTENT_TYPE",
    "Receipt",
    "ReceiptStatus",
    "StatusUpdate",
    "address_refusal",
    "aggregate_status",
    "decode_receipt",
    "encode_receipt",
    "is_receiptable",
    "receipt_updates",
    "sends_receipt",
    "waits_for_a_commit",
]

RECEIPT_CONTENT_TYPE: Final = "application/x-hearthmesh-receipt"
MAX_RECEIPT_IDS: Final = 256
"""Most message ids one receipt names (bounds the body to ~8.5 KiB)."""
_ID_BYTES: Final = 32
OUT_OF_TURN_KINDS: Final = frozenset({Kind.RECEIPT})
"""Kinds our node seals as soon as they are ready, not after the sends of their room accepted
before them (SPEC §15.4.5): a receipt names messages already sealed and its place among our
user's messages means nothing, so it must not wait behind one (a blob's seal being read)."""


class ReceiptStatus(IntEnum):
    """Per-recipient status of a message (SPEC §16.1); only ever moves forward.

    SENT is implied for every recipient once the sender's home node stored the message; only
    DELIVERED and READ travel in receipts. Values equal `storage.api.DeliveryStatus`.
    """

    SENT = 1
    DELIVERED = 2
    READ = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The body of a RECEIPT envelope."""

    status: ReceiptStatus
    """DELIVERED or READ."""
    message_ids: tuple[MessageId, ...]
    """Messages of the receipt's room, 1..MAX_RECEIPT_IDS, each once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """`recipient` reached `status` for `message_id` (to apply with `set_status`)."""

    message_id: MessageId
    recipient: UserId
    status: ReceiptStatus


def encode_receipt(receipt: Receipt) -> bytes:
    """CBOR [status, [message id, ...]].

    Raises:
        MalformedMessage: SENT, no ids, too many ids, duplicates or ids of the wrong length.
    """
    _check(receipt.status, receipt.message_ids)
    return encode_canonical([int(receipt.status), list(receipt.message_ids)])


@lru_cache(maxsize=256)
def decode_receipt(body: bytes) -> Receipt:
    """Parse a RECEIPT body. Raises MalformedMessage (or TooLarge).

    Remembers the latest bodies: a receipt is decoded where it is credited as it arrives and
    again as its frame is rendered (36 Python calls each). A `Receipt` is immutable, so one
    may be shared; what raises is not remembered.
    """
    value = decode_canonical(body, max_bytes=16 + MAX_RECEIPT_IDS * (_ID_BYTES + 2))
    match value:
        case [int() as status, list() as ids] if status in ReceiptStatus._value2member_map_:
            if not all(isinstance(i, bytes) for i in ids):
                raise MalformedMessage("receipt ids are byte strings")
            message_ids = tuple(MessageId(i) for i in ids if isinstance(i, bytes))
            _check(ReceiptStatus(status), message_ids)
            return Receipt(status=ReceiptStatus(status), message_ids=message_ids)
    raise MalformedMessage("receipt body is [status, [message id, ...]]")


def _check(status: ReceiptStatus, ids: tuple[MessageId, ...]) -> None:
    if status is ReceiptStatus.SENT:
        raise MalformedMessage("SENT is implied, never carried in a receipt")
    if not 1 <= len(ids) <= MAX_RECEIPT_IDS:
        raise MalformedMessage(f"a receipt names 1..{MAX_RECEIPT_IDS} messages")
    if any(len(i) != _ID_BYTES for i in ids) or len(set(ids)) != len(ids):
        raise MalformedMessage("receipt ids are distinct 32-byte message ids")


DELIVERED_RECEIPTS_MAX_MEMBERS: Final = 256
"""Rooms of more members send read receipts only (SPEC §16.2.4)."""


def sends_receipt(status: ReceiptStatus, members: int) -> bool:
    """Does an ack of `status` in a room of `members` members travel as a receipt (SPEC
    §16.2.4)? In a big group every member's "delivered" was one more envelope per member per
    message for the sender's home to take in (half the guaranteed path's deliveries), for an
    aggregate that members offline keep at "sent" anyway; "read" still travels."""
    return status is not ReceiptStatus.DELIVERED or members <= DELIVERED_RECEIPTS_MAX_MEMBERS


def waits_for_a_commit(kinds: Iterable[Kind]) -> bool:
    """May a home take in an arriving batch of envelopes of these kinds with its next commit
    rather than one of its own (SPEC §16.3.3)? Only a batch of receipts alone: no client waits
    on it, and a client's send that meets it then shares its commit and goes first instead of
    waiting out the receipt's."""
    kinds = tuple(kinds)
    return bool(kinds) and all(kind is Kind.RECEIPT for kind in kinds)


def is_receiptable(envelope: Envelope) -> bool:
    """Receipts are sent for user content only, never for receipts, membership or contact
    events (SPEC §16.2)."""
    return is_user_content(envelope)


def receipt_updates(
    receipt_envelope: Envelope, receipt: Receipt, originals: Mapping[MessageId, Envelope]
) -> list[StatusUpdate]:
    """The status changes a verified receipt justifies (SPEC §16.3).

    Args:
        receipt_envelope: the verified RECEIPT envelope (its sender is the recipient).
        receipt: its decoded body.
        originals: the stored envelopes of the named ids that this node holds.

    Returns:
        One update per named message that this node holds, in the receipt's room, of user
        content, and not sent by the receipt's own sender; everything else is ignored.
    """
    updates: list[StatusUpdate] = []
    for message_id in receipt.message_ids:
        original = originals.get(message_id)
        if (
            original is None
            or original.room != receipt_envelope.room
            or original.sender_user == receipt_envelope.sender_user
            or not is_receiptable(original)
        ):
            continue
        updates.append(
            StatusUpdate(
                message_id=message_id,
                recipient=receipt_envelope.sender_user,
                status=receipt.status,
            )
        )
    return updates


def address_refusal(
    receipt_envelope: Envelope,
    receipt: Receipt,
    recipient: UserId,
    originals: Mapping[MessageId, Envelope],
) -> NotAddressed | None:
    """Why a home of `recipient` must refuse this receipt, if it must (SPEC §16.2.3).

    A receipt is addressed to its sender's own homes and to the homes of the users whose
    messages it names. It is refused when the home proves otherwise: it holds messages of the
    receipt's room that the receipt names, and none of them is `recipient`'s. A receipt naming
    nothing held here (a message still on its way from a sibling) is not judged, nor is a
    sequenced receipt: the broadcast form of revision 0 goes to every member (SPEC §20.7).

    Args:
        originals: the stored envelopes of the named ids that this home holds, any sender.
    """
    if recipient == receipt_envelope.sender_user or not is_addressed(receipt_envelope):
        return None
    held = [
        original
        for message_id in receipt.message_ids
        if (original := originals.get(message_id)) is not None
        and original.room == receipt_envelope.room
    ]
    if not held or any(original.sender_user == recipient for original in held):
        return None
    return NotAddressed("a receipt that names none of this user's messages")


def aggregate_status(
    sender: UserId, members: Iterable[UserId], statuses: Mapping[UserId, int]
) -> ReceiptStatus:
    """A message's status across a room (SPEC §16.4): the lowest of its recipients'.

    Every member but the sender is a recipient; one without a recorded status is at SENT.
    A room with no other member counts as READ (nobody is left to receive it).
    """
    lowest = ReceiptStatus.READ
    for member in members:
        if member == sender:
            continue
        value = statuses.get(member, ReceiptStatus.SENT)
        status = ReceiptStatus(value) if value in ReceiptStatus._value2member_map_ else None
        if status is None or status < lowest:
            lowest = status or ReceiptStatus.SENT
    return lowest
