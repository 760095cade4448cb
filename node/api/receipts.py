"""Receipts on a home node (SPEC §16): clients' acks become signed RECEIPT envelopes; RECEIPT
envelopes from recipients become statuses of our messages.

Acks are coalesced: while one receipt is being stored, later acks of the same room and status
gather, and the next flush carries them all in one envelope (up to MAX_RECEIPT_IDS ids).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from hearthmesh.node.clock import Clock
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import HearthError, MalformedMessage, NotFound
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.protocol.receipts import (
    MAX_RECEIPT_IDS,
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    aggregate_status,
    decode_receipt,
    encode_receipt,
    is_receiptable,
    receipt_updates,
)
from hearthmesh.storage.api import DeliveryStatus, Store

__all__ = ["ReceiptService", "StatusChange", "statuses_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """A recipient's status of one of our messages moved forward."""

    room: RoomId
    message_id: MessageId
    recipient: UserId
    status: ReceiptStatus
    aggregate: ReceiptStatus
    """The lowest status over all recipients (groups: everyone delivered / read)."""


class ReceiptService:
    """Sends our user's receipts and applies the receipts others send us."""

    def __init__(self, node: Node, clock: Clock) -> None:
        self._node = node
        self._clock = clock
        self._pending: dict[tuple[RoomId, ReceiptStatus], list[MessageId]] = {}
        self._wake = asyncio.Event()
        self.sent = 0

    async def ack(self, message_id: MessageId, status: ReceiptStatus) -> None:
        """A client of our user received (or read) a message: queue the receipt.

        Raises:
            NotFound: no such message here.
            MalformedMessage: our own message, or one that takes no receipts.
        """
        envelope = await self._node.get_event(message_id)
        if envelope is None:
            raise NotFound(f"no message {message_id.hex()[:16]}")
        if envelope.sender_user == self._node.user_id:
            raise MalformedMessage("receipts are for other users' messages")
        if not is_receiptable(envelope):
            raise MalformedMessage(f"a {envelope.kind.name} takes no receipt")
        self._pending.setdefault((envelope.room, status), []).append(message_id)
        self._wake.set()

    async def run(self) -> None:
        """Flush queued acks until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for (room, status), ids in pending.items():
                try:
                    await self._flush(room, status, ids)
                except HearthError as exc:  # e.g. we left the room meanwhile
                    log.warning("receipt in %s not sent: %s", room.hex()[:12], exc)

    async def _flush(self, room: RoomId, status: ReceiptStatus, ids: list[MessageId]) -> None:
        store = self._node.store
        # Record our own status first: a second ack of the same status sends nothing.
        fresh = await store.run(
            _raise_own, store.store, self._node.user_id, ids, status, self._clock.now_ms()
        )
        for start in range(0, len(fresh), MAX_RECEIPT_IDS):
            chunk = tuple(fresh[start : start + MAX_RECEIPT_IDS])
            body = encode_receipt(Receipt(status=status, message_ids=chunk))
            await self._node.send(room, body, kind=Kind.RECEIPT, content_type=RECEIPT_CONTENT_TYPE)
            self.sent += 1

    async def apply(self, envelope: Envelope, *, write: bool = True) -> list[StatusChange]:
        """Apply a stored RECEIPT from another user to our messages' statuses.

        Returns the credited statuses that are current (a duplicate or overtaken receipt
        yields nothing). With `write=False` nothing is applied: the same view is read back,
        for replaying the feed (SPEC §15.4.3).

        Raises:
            MalformedMessage: the body is not a receipt.
        """
        receipt = decode_receipt(envelope.body)
        members = await self._node.members(envelope.room)
        store = self._node.store
        return await store.run(
            _apply,
            store.store,
            self._node.user_id,
            envelope,
            receipt,
            members,
            self._clock.now_ms() if write else None,
        )


def _raise_own(
    store: Store, own: UserId, ids: list[MessageId], status: ReceiptStatus, now_ms: int
) -> list[MessageId]:
    unique = list(dict.fromkeys(ids))
    raised = store.set_statuses(
        [(m, own, DeliveryStatus(status)) for m in unique], now_ms=now_ms
    )  # one transaction for the whole flush
    return [m for m, changed in zip(unique, raised, strict=True) if changed]


def _apply(
    store: Store,
    own: UserId,
    envelope: Envelope,
    receipt: Receipt,
    members: set[UserId],
    now_ms: int | None,
) -> list[StatusChange]:
    """Credit the receipt (unless `now_ms` is None), then read back what it says now."""
    originals: dict[MessageId, Envelope] = {}
    for message_id in receipt.message_ids:
        stored = store.get_event(message_id)
        if stored is not None and stored.envelope.sender_user == own:
            originals[message_id] = stored.envelope
    updates = receipt_updates(envelope, receipt, originals)
    if now_ms is not None:
        store.set_statuses(
            [(u.message_id, u.recipient, DeliveryStatus(u.status)) for u in updates],
            now_ms=now_ms,
        )  # one transaction for the whole receipt
    changes: list[StatusChange] = []
    for update in updates:
        statuses = {UserId(r.recipient): int(r.status) for r in store.statuses(update.message_id)}
        if statuses.get(update.recipient) != update.status:
            continue  # overtaken by a later status (or never credited): nothing to tell
        changes.append(
            StatusChange(
                room=envelope.room,
                message_id=update.message_id,
                recipient=update.recipient,
                status=update.status,
                aggregate=aggregate_status(own, members, statuses),
            )
        )
    return changes


def statuses_of(
    store: Store, own: UserId, envelopes: list[Envelope], members: set[UserId]
) -> dict[MessageId, tuple[ReceiptStatus, dict[str, int]]]:
    """Aggregate and per-recipient statuses of our messages among `envelopes` (store thread)."""
    out: dict[MessageId, tuple[ReceiptStatus, dict[str, int]]] = {}
    for envelope in envelopes:
        if envelope.sender_user != own or not is_receiptable(envelope):
            continue
        records = {UserId(r.recipient): int(r.status) for r in store.statuses(envelope.message_id)}
        out[envelope.message_id] = (
            aggregate_status(own, members, records),
            {user_id_text(r): s for r, s in records.items()},
        )
    return out
