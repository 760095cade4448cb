"""Receiving envelopes: DELIVER batches (guaranteed path) and gossip (fast path).

Everything that decides *what* happens lives in protocol/: verification, the arrival decision
(`protocol.arrival.ArrivalRules`: store, relay, defer or reject, and what a stored envelope
sets off), the fold, the release order. This module is the pump: it does in the store what the
decision says and reports the outcome (`StoreOutcome`): one ack result per item, sent only
after the transaction that stored the item committed (ARCHITECTURE §3 step 5), and what the rest of
the node reacts to. All store work of one batch runs in one store write batch. An encrypted
envelope for our users is opened (`RoomOpener`) before it is appended, so a refused one is
never stored and every reader after this point sees its content in the clear; a ROOM_KEY is
taken in once it is stored. State owned here: none (the rooms, the release order and the
rules own theirs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.node.e2ee.opened_late import react_to_opened
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.mesh.relationships import knows
from hearthmesh.node.rooms.contact_events import apply_contact_event
from hearthmesh.node.rooms.message_actions import acts_on, apply_recall
from hearthmesh.node.rooms.message_actions import refusal as action_refusal
from hearthmesh.node.rooms.receipt_credit import (
    NamedMessages,
    credit_receipt,
    read_named,
    receipt_refusal,
)
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.social.privacy import Privacy
from hearthmesh.node.social.profile_events import apply_profile
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.actions import ACTION_KINDS, target_of
from hearthmesh.protocol.addressing import is_addressed, is_sequenced
from hearthmesh.protocol.arrival import (
    ArrivalRules,
    Reaction,
    RoomStates,
    Verdict,
    appended_result,
    awaiting_key,
    error_result,
)
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult, rejected
from hearthmesh.protocol.e2ee import ENCRYPTED_CONTENT_TYPE as ENCRYPTED
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import (
    LocalProtocolError,
    NotAuthorized,
    QuotaExceeded,
    RemoteProtocolError,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.private import (
    BlockChanged,
    ConversationDeleted,
    MessageHidden,
    decode_private,
)
from hearthmesh.storage.api import AppendRequest, AppendResult, Direction, FeedEntry, Store

__all__ = ["Arrival", "Inbox", "StoreOutcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """A verified envelope, with whom it is for and the certificate of its device."""

    envelope: Envelope
    recipient: UserId
    certificate: bytes


@dataclass(slots=True)
class StoreOutcome:
    """What one store write batch did: the acks, and what the node reacts to after it."""

    results: list[DeliveryResult] = field(default_factory=list)
    released: list[Envelope] = field(default_factory=list)
    """Newly stored envelopes the app may now see, in per-sender order."""
    membership_changed: set[bytes] = field(default_factory=set)
    """Rooms whose member set changed."""
    relayed_for: set[UserId] = field(default_factory=set)
    """Users for whom this node now holds relayed envelopes."""
    unknown_devices: set[UserId] = field(default_factory=set)
    """Users who sent from a device their newest record we hold does not list."""
    contacts_made: set[RoomId] = field(default_factory=set)
    """Direct rooms whose two users an accepted friend request just made contacts."""
    queued_for_siblings: bool = False
    """The batch stored envelopes with outbox entries for our other homes (SPEC §22.3): the
    outbox is woken to take them (it sleeps while nothing is due)."""
    unknown_rooms_from: set[str] = field(default_factory=set)
    """Peers that delivered our own user's envelopes for rooms unknown here ("" for gossip):
    learn our user's rooms from our other homes (SPEC §23.5)."""
    opened_held: dict[bytes, int] = field(default_factory=dict)
    """Held envelopes a key the batch took opened, by session id: the undecryptable count
    drops with them at once (SPEC §27.13.3), not at the asker's next look."""
    logged: list[FeedEntry] | None = None
    """The arrival-log entries the batch's appends made, in number order, each with the
    envelope as stored: a client feed tells them without reading the log back. None when no
    feed asked for them (`accept(log=...)`: a node with no client builds none), or when the
    batch also moved or removed entries (a room key opened held events, a recall withdrew
    one), so only the log tells what it holds now."""


_NOT_OWED: Final = NotAuthorized("from before our users joined the group: not owed (SPEC §8.6)")
"""Why a fetched envelope from before our joining point is not stored (never sent: a fetch
answer is not acked)."""

_PENDING: Final = DeliveryResult(message_id=MessageId(b""), status=AckStatus.DEFERRED)
"""Holds an admitted item's place until the store answers (`_after_append` replaces it)."""


class Inbox:
    """Does what `ArrivalRules` decides for verified envelopes: store them in history for our
    users, hold them in the relay inbox for others, set off what a stored one entails."""

    def __init__(
        self,
        *,
        local_users: set[UserId],
        rules: ArrivalRules,
        rooms: RoomRegistry,
        release: ReleaseOrder,
        directory: HomeDirectory,
        relay_ttl_ms: int,
        sibling_destinations: Callable[[], tuple[bytes, ...]],
        opener: RoomOpener | None,
        privacy: Privacy | None = None,
        sent: SentInHand | None = None,
    ) -> None:
        """`opener` None keeps encrypted envelopes as they came (tests of the layers below);
        `sent`: our recent sends in hand, which the receipts that name them need not decode."""
        self._sent = sent or SentInHand(kept=0)
        self._local = local_users
        self._privacy = privacy or Privacy()
        self._opener = opener
        self._rules = rules
        self._rooms = rooms
        self._release = release
        self._directory = directory
        self._relay_ttl_ms = relay_ttl_ms
        self._sibling_destinations = sibling_destinations

    def accept(
        self,
        store: Store,
        items: list[Arrival | DeliveryResult],
        *,
        now_ms: int,
        peer: str = "",
        from_sibling: bool = False,
        fast_path: bool = False,
        fetched: bool = False,
        log: bool = False,
    ) -> StoreOutcome:
        """Store or relay each arrival; runs in a store write batch. Results are in input order.

        Args:
            items: verified arrivals, or the result already decided for an item that failed
                before the store (a bad signature, clock skew).
            peer: the peer that delivered them, whose share of the relay inbox (SPEC §11.5.3)
                an envelope for another user counts against; gossip is only for our users.
            fast_path: they came by gossip, which may overtake the ROOM_KEY a message needs:
                one that cannot be opened yet is DEFERRED, and the guaranteed path brings it
                again after its key (SPEC §27.11).
            fetched: they answer our gap fetch (SPEC §26): one from before our joining point,
                not a MEMBERSHIP event, is not owed and not stored; it only tells the release
                order its sender owes nothing up to it (SPEC §8.6).
            log: a client feed takes the log entries the appends make (`StoreOutcome.logged`).
        """
        outcome = StoreOutcome(logged=[] if log else None)
        # What reaches one of our homes from outside goes on to the others (ARCHITECTURE §8); what a
        # sibling sends us it has sent to every sibling itself.
        forward = () if from_sibling else self._sibling_destinations()
        rooms = self._rooms.states(store)
        requests: list[AppendRequest] = []
        slots: list[int] = []
        results: list[DeliveryResult] = []
        # what each RECEIPT names, read once for its refusal and taken again by its credit
        judged: dict[MessageId, NamedMessages] = {}
        key_pending = False  # a ROOM_KEY is among `requests`

        def append_pending() -> None:
            nonlocal key_pending
            key_pending = False
            if requests:
                outcome.queued_for_siblings |= bool(forward)
                logged = outcome.logged
                if logged is None:
                    appended = store.append_many(requests)
                else:
                    made = store.append_entries(requests)
                    logged += [entry for _, entry in made if entry is not None]
                    appended = [stored for stored, _ in made]
                # What each stored envelope sets off comes first, the releases after: a release
                # reads its sender's stored envelopes back (SPEC §8.4), so it may reach one
                # later in this commit, which must have taken effect by then. (A ROOM_KEY
                # reached before its key was taken let the messages of its session go to the
                # app unopened, and they were shown as it opened them, after later ones.)
                for slot, request, stored in zip(slots, requests, appended, strict=True):
                    envelope = request.envelope
                    named = judged.pop(envelope.message_id, None)
                    results[slot] = self._after_append(
                        store, envelope, stored, now_ms, outcome, named
                    )
                for request, stored in zip(requests, appended, strict=True):
                    self._offer_stored(store, request.envelope, stored, outcome, rooms)
                requests.clear()
                slots.clear()

        for item in items:
            if isinstance(item, DeliveryResult):
                results.append(item)
                continue
            envelope = item.envelope
            self._directory.remember_certificate(envelope.sender_device, item.certificate)
            decision = self._rules.decide(
                envelope,
                recipient=item.recipient,
                device_listed=self._directory.lists_device(
                    envelope.sender_user, envelope.sender_device
                ),
                rooms=rooms,
                now_ms=now_ms,
            )
            if decision.unknown_device:
                outcome.unknown_devices.add(envelope.sender_user)
            if decision.unknown_room:
                outcome.unknown_rooms_from.add(peer)
            if decision.verdict is Verdict.RELAY:
                results.append(self._relay(store, item, peer, now_ms, outcome))
                continue
            if fetched and self._not_owed(envelope, decision.verdict, rooms):
                append_pending()  # what it frees follows what came before it
                freed = self._release.pass_over(store, envelope)
                outcome.released += [self._as_shown(store, e) for e in freed]
                results.append(rejected(envelope.message_id, _NOT_OWED))
                continue
            opener = self._opener
            if decision.result is None and opener and envelope.content_type == ENCRYPTED:
                if key_pending:
                    append_pending()  # a ROOM_KEY earlier in this batch is taken in first
                try:
                    envelope = opener.open(store, envelope, hold=not fast_path)
                except RemoteProtocolError as exc:  # SPEC §27.7: refused, nothing stored
                    results.append(error_result(envelope.message_id, exc))
                    continue
                if fast_path and envelope.content_type == ENCRYPTED:  # its key comes later
                    results.append(awaiting_key(envelope.message_id))
                    continue
            refused = None  # judged on the opened plaintext, before the append (SPEC §31)
            if decision.result is None and envelope.kind in ACTION_KINDS:
                refused = action_refusal(store, envelope)
            elif decision.result is None and envelope.kind is Kind.RECEIPT:  # SPEC §16.2.3
                named = read_named(store, envelope, in_hand=self._sent.envelopes)
                refused = receipt_refusal(named, envelope, item.recipient)
                if named is not None and refused is None:
                    judged[envelope.message_id] = named
            elif decision.result is None and envelope.kind is Kind.ROOM_KEY:  # SPEC §27.5.3
                refused = self._room_key_refusal(envelope, item.recipient)
            if decision.result is not None:  # deferred or rejected: fixed before the store
                results.append(decision.result)
            elif refused is not None:  # another's message acted on, a receipt or key not for us
                if envelope is not item.envelope:  # opened above: keep nothing of it
                    store.forget_plaintext(envelope.message_id)
                results.append(rejected(envelope.message_id, refused))
            else:
                slots.append(len(results))  # its result is set after the commit
                requests.append(
                    AppendRequest(
                        envelope=envelope,
                        outbox_to=forward,
                        next_attempt_ms=now_ms,
                        acts_on=acts_on(envelope) if envelope.kind in ACTION_KINDS else None,
                    )
                )
                key_pending = key_pending or envelope.kind is Kind.ROOM_KEY
                results.append(_PENDING)
            if decision.store_before_next:
                append_pending()  # folded before the next item is judged
        append_pending()
        outcome.results = results
        # How far each sender was released commits with the events themselves: a restart
        # neither repeats nor skips what the app was given, at the cost of a few puts.
        self._release.save(store)
        return outcome

    def _not_owed(self, envelope: Envelope, verdict: Verdict, rooms: RoomStates) -> bool:
        """Is a fetched envelope one our users are not owed (SPEC §8.6): from before their
        joining point, and not a MEMBERSHIP event (the welcome gives those)? Its signature is
        checked and its place is its sender's: whether the rules would store it now (a sender
        who left since is deferred) does not change that its number is not owed."""
        return (
            verdict in (Verdict.STORE, Verdict.DEFER)
            and envelope.kind is not Kind.MEMBERSHIP
            and is_sequenced(envelope)
            and self._rules.before_joining(envelope, rooms)
        )

    def _room_key_refusal(
        self, envelope: Envelope, recipient: UserId
    ) -> RemoteProtocolError | None:
        """Why an addressed ROOM_KEY must be refused here, if it must (SPEC §27.5.3): its body
        is malformed, or none of its shares is for a device of `recipient`'s (judged by the
        newest record of that user held here; not judged without one). The form before the
        revision is never refused for its body: a bad share is counted as it is taken in."""
        if not is_addressed(envelope) or recipient == envelope.sender_user:
            return None
        devices = self._directory.devices(recipient)
        if devices is None:
            return None
        try:
            shares = e2ee.decode_room_key_shares(envelope.body)
        except RemoteProtocolError as exc:
            return exc
        return e2ee.address_room_key_refusal(envelope, shares, recipient, devices)

    def _after_append(
        self,
        store: Store,
        envelope: Envelope,
        stored: AppendResult,
        now_ms: int,
        outcome: StoreOutcome,
        named: NamedMessages | None,
    ) -> DeliveryResult:
        result = appended_result(
            envelope.message_id,
            stored=stored is AppendResult.STORED,
            duplicate=stored is AppendResult.DUPLICATE,
        )
        if stored is AppendResult.STORED:
            if self._rooms.note_stored(store, envelope, now_ms=now_ms):
                outcome.membership_changed.add(envelope.room)
            if envelope.kind is Kind.ROOM_KEY and self._opener is not None:
                # what waited for this key and went by unseen is shown now (SPEC §27.11);
                # what still waits for its turn is released in order from the store, opened
                session_id, opened = self._opener.take_room_key(store, envelope)
                if opened:  # renumbered in the log (node/e2ee/room_opener.py)
                    outcome.logged = None
                    held = outcome.opened_held  # (a key of it from an earlier index opens more)
                    held[session_id] = held.get(session_id, 0) + len(opened)
                outcome.contacts_made |= react_to_opened(
                    store, opened, users=self._local, now_ms=now_ms
                )
                outcome.released += [e for e in opened if self._release.was_released(store, e)]
            for reaction in self._rules.reactions(envelope):
                self._react(store, reaction, envelope, now_ms, outcome, named)
        return result

    def _offer_stored(
        self,
        store: Store,
        envelope: Envelope,
        stored: AppendResult,
        outcome: StoreOutcome,
        rooms: RoomStates,
    ) -> None:
        """Offer an appended envelope to the release order (SPEC §8.2, §8.4, §8.6)."""
        if stored is AppendResult.CONFLICT:
            return
        history = is_sequenced(envelope) and self._rules.before_joining(envelope, rooms)
        # a duplicate held back before a restart may be due now: the app has not seen it yet
        first = self._rules.first_seq_if_new(envelope, history=history)
        released = self._release.offer(
            store,
            envelope,
            first_seq_if_new=first,
            new=stored is AppendResult.STORED,
            history=history,
        )
        outcome.released += [self._as_shown(store, e) for e in released]

    def _as_shown(self, store: Store, envelope: Envelope) -> Envelope:
        """A released envelope as the store shows it now: one the release order held in memory
        since before its ROOM_KEY came is opened by now (SPEC §27.11)."""
        if envelope.content_type != ENCRYPTED or self._opener is None:
            return envelope
        stored = store.get_event(envelope.message_id)
        return envelope if stored is None else stored.envelope

    def _react(
        self,
        store: Store,
        reaction: Reaction,
        envelope: Envelope,
        now_ms: int,
        outcome: StoreOutcome,
        named: NamedMessages | None,
    ) -> None:
        match reaction:
            case Reaction.APPLY_PRIVATE:
                apply_private(store, envelope, self._privacy)
            case Reaction.CREDIT_RECEIPT:
                for user in self._local:
                    credit_receipt(store, user, envelope, now_ms=now_ms, judged=named)
            case Reaction.APPLY_CONTACT_EVENT:
                for user in self._local:
                    if apply_contact_event(store, user, envelope, now_ms=now_ms):
                        outcome.contacts_made.add(envelope.room)
            case Reaction.APPLY_PROFILE:
                for user in self._local:
                    apply_profile(store, user, envelope)
            case Reaction.APPLY_RECALL:
                apply_recall(store, envelope)
                if (target := target_of(envelope)) is not None:  # our other device's recall
                    self._sent.recalled(target)
                outcome.logged = None  # it may have withdrawn an event this batch logged

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
            return error_result(envelope.message_id, exc)
        outcome.relayed_for.add(arrival.recipient)
        return DeliveryResult(message_id=envelope.message_id, status=AckStatus.RELAYED)


def apply_private(store: Store, envelope: Envelope, privacy: Privacy) -> None:
    """Apply our user's PRIVATE change (SPEC §22.6); runs in a store write batch.

    A conversation deleted on another device leaves our list too, unless something newer than
    the deletion arrived here meanwhile (a later event lists a conversation again). A block
    made on another device holds here too (SPEC §32.3).
    """
    try:
        change = decode_private(envelope.body)
    except RemoteProtocolError as exc:
        log.info("private change %s ignored: %s", envelope.message_id.hex()[:12], exc)
        return
    if isinstance(change, MessageHidden):  # delete for me (SPEC §31.7)
        store.hide_message(envelope.sender_user, change.message)
        return
    if isinstance(change, BlockChanged):
        try:
            privacy.set_blocked(store, change.user, blocked=change.blocked)
        except QuotaExceeded as exc:  # our other device let more through: keep the first ones
            log.warning("block from another device not kept: %s", exc)
        return
    _delete_conversation(store, envelope, change)


def _delete_conversation(store: Store, envelope: Envelope, change: ConversationDeleted) -> None:
    newest = store.page_history(change.room, cursor=None, direction=Direction.BACKWARD, limit=1)
    if not newest.events or newest.events[-1].envelope.hlc <= envelope.hlc:
        store.delete_conversation(envelope.sender_user, change.room)
