"""Receipts are credited where they are stored (SPEC §16.3), in the same transaction.

A RECEIPT envelope that reaches one of our homes raises the statuses it names as it is stored:
another user's receipt raises that user's status of our messages; one of our own user's
(sent by another of our devices, SPEC §22) raises our own status of the messages it names,
so a message read on the phone is read on the laptop too. Crediting at storage time costs no
commit of its own, and nothing stored is ever left uncredited, even while no client API runs.
A receipt that reached a home it is not addressed to is refused before it is stored
(`receipt_refusal`, SPEC §16.2.3). The arrival batch reads the named messages once
(`read_named`) for both the refusal and the credit: decoding each named envelope was the
largest part of a receipt's cost on the home of the messages it names, so the ones our home
sent lately are taken from memory (node/delivery/sent_in_hand.py) once the store shows it still
holds them. State owned here: none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.protocol.e2ee import ENCRYPTED_CONTENT_TYPE
from hearthmesh.protocol.envelope import Envelope, MessageId
from hearthmesh.protocol.errors import NotAddressed, RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.receipts import (
    Receipt,
    StatusUpdate,
    address_refusal,
    decode_receipt,
    is_receiptable,
    receipt_updates,
)
from hearthmesh.storage.api import DeliveryStatus, Store

__all__ = ["NamedMessages", "credit_receipt", "credited_updates", "read_named", "receipt_refusal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NamedMessages:
    """An opened RECEIPT's body and the messages it names that this home held when it was
    judged; read once in its arrival batch, for its refusal and then its credit."""

    receipt: Receipt
    held: dict[MessageId, Envelope]
    """The named messages held here, any sender, as the store showed them."""


def read_named(
    store: Store, envelope: Envelope, *, in_hand: Mapping[bytes, Envelope] | None = None
) -> NamedMessages | None:
    """The receipt in this RECEIPT and the named messages held here (reads only); None while
    it is not opened (no room key) or when its body does not decode.

    Args:
        in_hand: envelopes held already as the store shows them (our recent sends,
            node/delivery/sent_in_hand.py): whether each is held is read all the same, only
            its decode is spared.
    """
    content = content_of(envelope)
    if content is None:
        return None
    try:
        receipt = decode_receipt(content.body)
    except RemoteProtocolError:
        return None  # stored as sent, it credits nothing (`credit_receipt`)
    return NamedMessages(receipt=receipt, held=_held(store, receipt.message_ids, in_hand))


def credited_updates(
    store: Store,
    own: UserId,
    envelope: Envelope,
    receipt: Receipt,
    *,
    known: Mapping[MessageId, Envelope] | None = None,
) -> list[StatusUpdate]:
    """What another user's `receipt` says of our messages that we hold (reads only).

    Args:
        known: named messages already in hand, as the store shows them: not read again.
    """
    known = known or {}
    unknown = (m for m in receipt.message_ids if m not in known)
    return _updates(own, envelope, receipt, {**known, **_held(store, unknown)})


def _updates(
    own: UserId, envelope: Envelope, receipt: Receipt, held: dict[MessageId, Envelope]
) -> list[StatusUpdate]:
    ours = {message_id: stored for message_id, stored in held.items() if stored.sender_user == own}
    return receipt_updates(envelope, receipt, ours)


def receipt_refusal(
    named: NamedMessages | None, envelope: Envelope, recipient: UserId
) -> NotAddressed | None:
    """Why a home of `recipient` refuses this (opened) RECEIPT, if it must (SPEC §16.2.3):
    it names messages held here, none of them `recipient`'s. One not opened yet (no room key)
    or whose body does not decode (`named` None) is not judged."""
    if named is None:
        return None
    return address_refusal(envelope, named.receipt, recipient, named.held)


def credit_receipt(
    store: Store,
    own: UserId,
    envelope: Envelope,
    *,
    now_ms: int,
    judged: NamedMessages | None = None,
) -> None:
    """Raise the statuses a just-stored RECEIPT names; runs in the storing transaction.

    Args:
        judged: what its refusal read in this batch (`read_named`); only the named messages
            it did not hold, or held unopened, are read again: an earlier item of the batch
            may have stored or opened them since.
    """
    content = content_of(envelope)
    if content is None:
        return  # its room key has not come: credited when it opens (node/e2ee/opened_late.py)
    if judged is None:
        try:
            receipt = decode_receipt(content.body)
        except RemoteProtocolError as exc:  # stored as sent; it names nothing we can credit
            log.info("receipt %s credits nothing: %s", envelope.message_id.hex()[:16], exc)
            return
        held = _held(store, receipt.message_ids)
    else:
        receipt = judged.receipt
        held = judged.held | _held(
            store,
            (
                message_id
                for message_id in receipt.message_ids
                if (seen := judged.held.get(message_id)) is None
                or seen.content_type == ENCRYPTED_CONTENT_TYPE
            ),
        )
    if envelope.sender_user == own:
        named = [
            (message_id, own, DeliveryStatus(receipt.status))
            for message_id in receipt.message_ids
            if _is_others_in(held.get(message_id), envelope, own)
        ]
        store.set_statuses(named, now_ms=now_ms)
        return
    updates = _updates(own, envelope, receipt, held)
    store.set_statuses(
        [(u.message_id, u.recipient, DeliveryStatus(u.status)) for u in updates], now_ms=now_ms
    )


def _held(
    store: Store,
    message_ids: Iterable[MessageId],
    in_hand: Mapping[bytes, Envelope] | None = None,
) -> dict[MessageId, Envelope]:
    """The stored envelopes of the named ids that this home holds, any sender."""
    found = store.get_events(message_ids, in_hand=in_hand)
    return {message_id: stored.envelope for message_id, stored in found.items()}


def _is_others_in(stored: Envelope | None, receipt: Envelope, own: UserId) -> bool:
    return (
        stored is not None
        and stored.room == receipt.room
        and stored.sender_user != own
        and is_receiptable(stored)
    )
