"""Receiving envelopes: DELIVER batches (guaranteed path) and gossip (fast path).

Everything that decides *what* happens lives in protocol/ (verification, the fold) and in
`RoomRegistry`; this module moves verified envelopes into the store and reports the outcome:
one ack result per item, sent only after the transaction that stored the item committed
(ARCHITECTURE §3 step 5). All store work of one batch runs in one store write batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.mesh.relationships import knows
from hearthmesh.node.rooms.contact_events import apply_contact_event
from hearthmesh.node.rooms.receipt_credit import credit_receipt
from hearthmesh.node.rooms.registry import Admission, RoomRegistry
from hearthmesh.protocol.content import is_contact_event
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult, rejected
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.errors import (
    ClockSkew,
    ErrorCode,
    HearthError,
    LocalProtocolError,
    ProtocolError,
    QuotaExceeded,
    RemoteProtocolError,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.private import decode_private
from hearthmesh.storage.api import AppendRequest, AppendResult, Direction, Store

__all__ = ["Arrival", "Inbox", "StoreOutcome", "error_result"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """A verified envelope, with whom it is for and the certificate of its device."""

    envelope: Envelope
    recipient: UserId
    certificate: bytes


@dataclass(slots=True)
class StoreOutcome:
    """What one store write batch did."""

    results: list[DeliveryResult] = field(default_factory=list)
    released: list[Envelope] = field(default_factory=list)
    """Newly stored envelopes the app may now see, in per-sender order."""
    membership_changed: set[bytes] = field(default_factory=set)
    """Rooms whose member set changed."""
    relayed_for: set[UserId] = field(default_factory=set)
    """Users for whom this node now holds relayed envelopes."""
    unknown_devices: set[UserId] = field(default_factory=set)
    """Users who sent from a device their newest record we hold does not list."""


class Inbox:
    """Accepts verified envelopes for local users (history) or others (relay inbox)."""

    def __init__(
        self,
        *,
        local_users: set[UserId],
        rooms: RoomRegistry,
        release: ReleaseOrder,
        directory: HomeDirectory,
        relay_ttl_ms: int,
        siblings: Callable[[], tuple[bytes, ...]],
    ) -> None:
        self._local = local_users
        self._rooms = rooms
        self._release = release
        self._directory = directory
        self._relay_ttl_ms = relay_ttl_ms
        self._siblings = siblings

    def accept(
        self,
        store: Store,
        items: list[Arrival | DeliveryResult],
        *,
        now_ms: int,
        peer: str = "",
        from_sibling: bool = False,
    ) -> StoreOutcome:
        """Store or relay each arrival; runs in a store write batch. Results are in input order.

        Args:
            items: verified arrivals, or the result already decided for an item that failed
                before the store (a bad signature, clock skew).
            peer: the peer that delivered them, whose share of the relay inbox (SPEC §11.5.3)
                an envelope for another user counts against; gossip is only for our users.
        """
        outcome = StoreOutcome()
        # What reaches one of our homes from outside goes on to the others (ARCHITECTURE §8); what a
        # sibling sends us it has sent to every sibling itself.
        forward = () if from_sibling else self._siblings()
        requests: list[AppendRequest] = []
        slots: list[int] = []
        results: list[DeliveryResult] = []

        def append_pending() -> None:
            if requests:
                appended = store.append_many(requests)
                for slot, request, stored in zip(slots, requests, appended, strict=True):
                    envelope = request.envelope
                    results[slot] = self._after_append(store, envelope, stored, now_ms, outcome)
                requests.clear()
                slots.clear()

        for item in items:
            if isinstance(item, DeliveryResult):
                results.append(item)
                continue
            envelope = item.envelope
            self._directory.remember_certificate(envelope.sender_device, item.certificate)
            if envelope.kind.ephemeral:
                refusal = ProtocolError("ephemeral kinds are not delivered")
                results.append(rejected(envelope.message_id, refusal))
                continue
            if item.recipient not in self._local:
                results.append(self._relay(store, item, peer, now_ms, outcome))
                continue
            if self._directory.lists_device(envelope.sender_user, envelope.sender_device) is False:
                # revoked, or linked after the record we hold: retry once we know more
                admission = Admission.DEFER
                outcome.unknown_devices.add(envelope.sender_user)
            else:
                try:  # SPEC §12.2: decided before anything is stored or held
                    admission = self._rooms.admit(store, envelope, now_ms=now_ms)
                except RemoteProtocolError as exc:
                    results.append(rejected(envelope.message_id, exc))
                    continue
            if admission is Admission.ACCEPT:
                slots.append(len(results))  # its result is set after the commit
                requests.append(
                    AppendRequest(envelope=envelope, outbox_to=forward, next_attempt_ms=now_ms)
                )
            results.append(
                DeliveryResult(
                    message_id=envelope.message_id,
                    status=AckStatus.DEFERRED,
                    code=int(ErrorCode.NOT_AUTHORIZED),
                )
            )
            if envelope.kind is Kind.MEMBERSHIP:
                # folded before the next item is judged: a batch may hold the CREATE and the
                # ADDs after it, each allowed only by the ones before
                append_pending()
        append_pending()
        outcome.results = results
        # How far each sender was released commits with the events themselves: a restart
        # neither repeats nor skips what the app was given, at the cost of a few puts.
        self._release.save(store)
        return outcome

    def _after_append(
        self,
        store: Store,
        envelope: Envelope,
        stored: AppendResult,
        now_ms: int,
        outcome: StoreOutcome,
    ) -> DeliveryResult:
        first = 1 if self._rooms.is_direct_with_local(envelope) else envelope.seq
        if stored is AppendResult.DUPLICATE:
            # held back before a restart, it may be due now: the app has not seen it yet
            outcome.released += self._release.offer(store, envelope, first_seq_if_new=first)
            return DeliveryResult(message_id=envelope.message_id, status=AckStatus.DUPLICATE)
        if stored is AppendResult.CONFLICT:
            return rejected(envelope.message_id, ProtocolError("another event holds this slot"))
        if self._rooms.note_stored(store, envelope, now_ms=now_ms):
            outcome.membership_changed.add(envelope.room)
        if envelope.kind is Kind.PRIVATE and envelope.sender_user in self._local:
            apply_private(store, envelope)
        if envelope.kind is Kind.RECEIPT:
            for user in self._local:
                credit_receipt(store, user, envelope, now_ms=now_ms)
        elif is_contact_event(envelope) and envelope.sender_user not in self._local:
            for user in self._local:
                apply_contact_event(store, user, envelope, now_ms=now_ms)
        outcome.released += self._release.offer(store, envelope, first_seq_if_new=first)
        return DeliveryResult(message_id=envelope.message_id, status=AckStatus.STORED)

    def _relay(
        self, store: Store, arrival: Arrival, peer: str, now_ms: int, outcome: StoreOutcome
    ) -> DeliveryResult:
        envelope = arrival.envelope
        if not peer:
            raise LocalProtocolError("a relayed envelope needs the peer that delivered it")
        known = knows(store, self._local, envelope.sender_user) or knows(
            store, self._local, arrival.recipient
        )
        try:
            store.relay_put(
                arrival.recipient,
                envelope,
                peer=peer.encode("ascii"),
                known=known,
                now_ms=now_ms,
                ttl_ms=self._relay_ttl_ms,
            )
        except QuotaExceeded as exc:
            log.debug("relay refused for %s: %s", arrival.recipient.hex()[:12], exc)
            return DeliveryResult(
                message_id=envelope.message_id, status=AckStatus.DEFERRED, code=int(exc.code)
            )
        outcome.relayed_for.add(arrival.recipient)
        return DeliveryResult(message_id=envelope.message_id, status=AckStatus.RELAYED)


def error_result(message_id: MessageId, error: HearthError) -> DeliveryResult:
    """The result for an item that failed before the store: skew is worth a retry later."""
    if isinstance(error, ClockSkew):
        return DeliveryResult(
            message_id=message_id, status=AckStatus.DEFERRED, code=int(ErrorCode.CLOCK_SKEW)
        )
    return rejected(message_id, error)


def apply_private(store: Store, envelope: Envelope) -> None:
    """Apply our user's PRIVATE change (SPEC §22.6); runs in a store write batch.

    A conversation deleted on another device leaves our list too, unless something newer than
    the deletion arrived here meanwhile (a later event lists a conversation again).
    """
    try:
        change = decode_private(envelope.body)
    except RemoteProtocolError as exc:
        log.info("private change %s ignored: %s", envelope.message_id.hex()[:12], exc)
        return
    newest = store.page_history(change.room, cursor=None, direction=Direction.BACKWARD, limit=1)
    if not newest.events or newest.events[-1].envelope.hlc <= envelope.hlc:
        store.delete_conversation(envelope.sender_user, change.room)
