"""Receipts on a home node (SPEC §16): clients' acks become signed RECEIPT envelopes; the
receipts others send are credited where they are stored (node/rooms/receipt_credit.py) and read back
here as `receipt` frames.

Acks are coalesced: acks of one room, status and message sender that come within
RECEIPT_LINGER_MS (or while the previous receipt is being stored) travel in one envelope of up
to MAX_RECEIPT_IDS ids, so a burst of acks costs one signature, one commit and one delivery
instead of one each. Each receipt is addressed to the homes of the one user whose messages it
names (and our own other homes), never to every member (SPEC §16.2.3): one per sender rather
than one naming several senders' messages, so no home takes in ids of others' messages, and a
home can tell a receipt that is not for it. `Outgoing` sends it in the broadcast form while a
home it goes to is older (SPEC §20.7).

Acks and receipts name messages the feed showed our clients moments before: the envelopes of
the newest SHOWN_KEPT `message` frames are kept as they are rendered (`shown`), so an ack, and
a receipt's frame, take the messages they name from there and read only the others back from
the store (decoding each was most of an ack's cost, and most of a receipt frame's).

State: the acks waiting for their linger window; the messages recently shown to our clients.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.envelopes_in_hand import IN_HAND_BYTES, IN_HAND_KEPT, EnvelopesInHand
from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.node.node import Node
from hearthmesh.node.rooms.receipt_credit import credited_updates
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import HearthError, MalformedMessage, NotFound, store_failed
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
    sends_receipt,
)
from hearthmesh.storage.api import DeliveryStatus, OnStored, Store

__all__ = [
    "RECEIPT_LINGER_MS",
    "SHOWN_BYTES",
    "SHOWN_KEPT",
    "ReceiptService",
    "StatusChange",
    "statuses_of",
    "unread_count",
]

log = logging.getLogger(__name__)

RECEIPT_LINGER_MS: Final = 20
"""How long an ack waits for others to share its receipt: below what an eye sees on a tick."""
SHOWN_KEPT: Final = IN_HAND_KEPT
"""Messages shown to our clients that acks and receipts find in memory, at most..."""
SHOWN_BYTES: Final = IN_HAND_BYTES
"""...and their bytes (wire and shown body) at most: a peer's 64 KB messages keep fewer."""


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
    """Sends our user's receipts and reads back what the receipts others sent us credited."""

    def __init__(
        self,
        node: Node,
        clock: Clock,
        on_stored: OnStored | None = None,
    ) -> None:
        """`on_stored`: each receipt's arrival-log entries, once it is committed (the feed)."""
        self._node = node
        self._clock = clock
        self._on_stored = on_stored
        self._pending: dict[tuple[RoomId, ReceiptStatus, UserId], list[MessageId]] = {}
        """Acks per (room, status, the messages' sender), waiting for one receipt."""
        self._wake = asyncio.Event()
        self._shown = EnvelopesInHand(kept=SHOWN_KEPT, max_bytes=SHOWN_BYTES)
        """The messages of the newest `message` frames rendered for our clients."""
        self.sent = 0

    @property
    def shown_bytes(self) -> int:
        """Bytes of the messages kept as shown (wire and shown body)."""
        return self._shown.size_bytes

    def shown(self, envelope: Envelope) -> None:
        """Our clients are shown the message `envelope`: acks and receipts name it next."""
        self._shown.keep(envelope)

    async def ack(self, message_id: MessageId, status: ReceiptStatus) -> None:
        """A client of our user received (or read) a message: queue the receipt.

        Raises:
            NotFound: no such message here.
            MalformedMessage: our own message, or one that takes no receipts.
        """
        envelope = self._shown.envelopes.get(message_id) or await self._node.get_event(message_id)
        if envelope is None:
            raise NotFound(f"no message {message_id.hex()[:16]}")
        if envelope.sender_user == self._node.user_id:
            raise MalformedMessage("receipts are for other users' messages")
        if not is_receiptable(envelope):
            raise MalformedMessage(f"a {envelope.kind.name} takes no receipt")
        key = (envelope.room, status, envelope.sender_user)
        self._pending.setdefault(key, []).append(message_id)
        self._wake.set()

    async def run(self) -> None:
        """Send queued acks until cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(RECEIPT_LINGER_MS / 1000)
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for (room, status, sender), ids in pending.items():
                try:
                    await self._flush(room, status, sender, ids)
                except HearthError as exc:  # e.g. we left the room meanwhile
                    if store_failed(exc):  # the store failed: the node fail-stops
                        raise
                    log.warning("receipt in %s not sent: %s", room.hex()[:12], exc)

    async def _flush(
        self, room: RoomId, status: ReceiptStatus, sender: UserId, ids: list[MessageId]
    ) -> None:
        store = self._node.store
        # A second ack of a status already recorded sends nothing. Recording it and storing the
        # receipt are issued together, so they share one commit.
        fresh = await store.read_inline(_fresh, store.store, self._node.user_id, ids, status)
        if not fresh:
            return
        sending = sends_receipt(status, len(await self._node.members(room)))
        recorded = store.run(
            _raise_own, store.store, self._node.user_id, fresh, status, self._clock.now_ms()
        )
        if not sending:  # a big group's "delivered": our own status moves, nothing travels
            await recorded
            return
        sends = [self._send(room, status, sender, chunk) for chunk in _chunks(fresh)]
        await asyncio.gather(recorded, *sends)

    async def _send(
        self, room: RoomId, status: ReceiptStatus, sender: UserId, ids: tuple[MessageId, ...]
    ) -> None:
        body = encode_receipt(Receipt(status=status, message_ids=ids))
        await self._node.send(
            room,
            body,
            kind=Kind.RECEIPT,
            content_type=RECEIPT_CONTENT_TYPE,
            to=frozenset({sender}),  # the homes of the user whose messages it names
            on_stored=self._on_stored,
        )
        self.sent += 1

    async def changes(self, envelope: Envelope) -> list[StatusChange]:
        """The statuses a stored RECEIPT from another user credited that are still current
        (a duplicate or overtaken receipt, or one not opened yet, yields nothing); reads only.

        Raises:
            MalformedMessage: the body is not a receipt.
        """
        content = content_of(envelope)
        if content is None:
            return []  # no room key yet: told when it opens (SPEC §27.13.5)
        receipt = decode_receipt(content.body)
        members = await self._node.members(envelope.room)
        shown = {
            m: held
            for m in receipt.message_ids
            if (held := self._shown.envelopes.get(m)) is not None
        }
        store = self._node.store
        return await store.read_inline(
            _current, store.store, self._node.user_id, envelope, receipt, members, shown
        )


def _chunks(ids: list[MessageId]) -> list[tuple[MessageId, ...]]:
    return [tuple(ids[i : i + MAX_RECEIPT_IDS]) for i in range(0, len(ids), MAX_RECEIPT_IDS)]


def _fresh(
    store: Store, own: UserId, ids: list[MessageId], status: ReceiptStatus
) -> list[MessageId]:
    """The ids (each once) whose recorded status of our own user is below `status`."""
    fresh = []
    for message_id in dict.fromkeys(ids):
        held = _own_status(store, own, message_id)
        if held is None or held < status:
            fresh.append(message_id)
    return fresh


def _own_status(store: Store, own: UserId, message_id: MessageId) -> int | None:
    """Our own user's recorded status of another user's message (None: no receipt yet)."""
    return {r.recipient: r.status for r in store.statuses(message_id)}.get(own)


def unread_count(store: Store, own: UserId, envelopes: list[Envelope]) -> int:
    """Other users' messages at the end of `envelopes` (oldest first) our user has not read:
    counted back from the newest, up to our own latest message or the newest one we read
    (reading a message reads what came before it), in a store batch (SPEC §15.5.1)."""
    count = 0
    for envelope in reversed(envelopes):
        if envelope.sender_user == own:
            break
        if not is_receiptable(envelope):
            continue
        held = _own_status(store, own, envelope.message_id)
        if held is not None and held >= ReceiptStatus.READ:
            break
        count += 1
    return count


def _raise_own(
    store: Store, own: UserId, ids: list[MessageId], status: ReceiptStatus, now_ms: int
) -> None:
    store.set_statuses([(m, own, DeliveryStatus(status)) for m in ids], now_ms=now_ms)


def _current(
    store: Store,
    own: UserId,
    envelope: Envelope,
    receipt: Receipt,
    members: set[UserId],
    shown: dict[MessageId, Envelope],
) -> list[StatusChange]:
    changes: list[StatusChange] = []
    for update in credited_updates(store, own, envelope, receipt, known=shown):
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
    """Aggregate and per-recipient statuses of our messages among `envelopes` (in a store batch)."""
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
