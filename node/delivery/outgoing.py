"""What our user sends (ARCHITECTURE §3 steps 1-3): encrypted (SPEC §27.6), sealed, stored with
its outbox entries in one group commit, handed to the delivery worker in memory, and gossiped to
groups.

A user's content (`e2ee.encrypts(kind)`) is sealed encrypted, preceded by the ROOM_KEY
envelopes of the shares `RoomSender` says must go first: one sequenced ROOM_KEY (to every
member) for the users whose homes have not all advertised `addressed-room-keys`, and
unsequenced ones addressed to each other user's homes (SPEC §27.5.3); callers are handed the
envelope as our homes show it (`e2ee.opened_view`), whose wire is the encrypted one.

State: our next sequence number per room, kept on the event loop, so the hot path from a
client's `send` to the store's append awaits nothing else; the order of each room's pending
seals (`SealOrder`: sends seal in the order they were accepted, SPEC §15.4.5); our membership
changes sealed and not yet committed, per room, which the members a send seals for include
(SPEC §27.10.1). Member sets are `RoomRegistry`'s (read through `RoomMembers`, from memory when
it holds the room, and read again from memory where a send encrypts and where it seals); what
our membership changes did goes out on the `StoreOutcomes` flow, never to a caller above.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from hearthmesh.node.clock import Clock, HybridClock
from hearthmesh.node.delivery.gossip_out import GossipPublisher
from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.delivery.outcomes import StoreOutcomes
from hearthmesh.node.delivery.seal_order import SealOrder, SealTurn, out_of_turn
from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.node.e2ee.room_sender import Encryption, RoomSender
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.mesh.capabilities import Revisions
from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.message_actions import apply_recall
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.actions import target_of
from hearthmesh.protocol.addressing import ADDRESSED_KINDS, UNSEQUENCED, is_gossiped, is_sequenced
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.content import TYPING_CONTENT_TYPE, encode_typing
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    NotAuthorized,
    StorageError,
)
from hearthmesh.protocol.gossip import encode_gossip, room_topic
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    MembershipChange,
    encode_membership,
)
from hearthmesh.protocol.receipts import OUT_OF_TURN_KINDS
from hearthmesh.protocol.rooms import is_direct_room
from hearthmesh.protocol.written_time import written_stamp
from hearthmesh.storage.api import AppendRequest, AppendResult, FeedEntry, OnStored, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["Outgoing", "Sealed", "SealedKey", "WrittenTimes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenTimes:
    """A client's written and sent times (its clock) and when its home received it (SPEC §31.6)."""

    written_ms: int
    sent_ms: int
    received_ms: int


Appended = tuple[AppendResult, FeedEntry | None]
"""What an append did to one request, with the arrival-log entry it made (`append_entries`)."""


def _stored_entries(appended: list[Appended]) -> list[FeedEntry]:
    """The arrival-log entries of our own envelopes, each of which must have been stored."""
    entries = []
    for result, entry in appended:
        if entry is None:
            raise LocalProtocolError(f"own envelope not stored: {result.value}")
        entries.append(entry)
    return entries


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedKey:
    """A ROOM_KEY sealed before the envelope whose session it shares (SPEC §27.5)."""

    envelope: Envelope
    to: UserId | None
    """The user whose homes an addressed ROOM_KEY goes to (SPEC §27.5.3); None: sequenced, to
    every member (the form before, SPEC §20.7)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sealed:
    """Our envelope, sealed but not yet stored, with the members it goes to."""

    envelope: Envelope
    """As our homes show it: for encrypted content, the clear content over the encrypted wire."""
    members: frozenset[UserId]
    to: frozenset[UserId] | None = None
    """The users whose homes an addressed kind goes to (SPEC §16.2.3); None: every member,
    a RECEIPT in the broadcast form too (SPEC §20.7)."""
    acts_on: MessageId | None = None
    """The message an EDIT, RECALL or REACTION names, from the plaintext its writer had
    (SPEC §31.5): the sealed body may be ciphertext."""
    room_keys: tuple[SealedKey, ...] = ()
    """ROOM_KEY envelopes committed and sent before it (SPEC §27.5)."""
    encryption: Encryption | None = None


def _key_requests(
    keys: list[tuple[Envelope, tuple[bytes, ...], tuple[bytes, ...]]], due_ms: int
) -> list[AppendRequest]:
    """The appends of ROOM_KEY envelopes (`Outgoing._keys_to`), leased until `due_ms`."""
    return [
        AppendRequest(envelope=key, outbox_to=to, absent_to=marked, next_attempt_ms=due_ms)
        for key, to, marked in keys
    ]


class Outgoing:
    """Seals and sends our user's envelopes."""

    def __init__(
        self,
        *,
        keyring: Keyring,
        hlc: HybridClock,
        clock: Clock,
        store: AsyncStore,
        rooms: RoomRegistry,
        members: RoomMembers,
        outbox: OutboxWorker,
        gossip: GossipPublisher,
        sibling_destinations: Callable[[], tuple[bytes, ...]],
        outcomes: StoreOutcomes,
        revisions: Revisions,
        encryption: RoomSender | None,
        sent: SentInHand | None = None,
    ) -> None:
        """`encryption` None sends content in the clear (tests of the layers below it);
        `sent` keeps what our sends committed for the receipts that will name them."""
        self._keyring = keyring
        self._sent = sent or SentInHand(kept=0)
        self._encryption = encryption
        self._hlc = hlc
        self._clock = clock
        self._store = store
        self._rooms = rooms
        self._outbox = outbox
        self._gossip = gossip
        self._members = members
        self._sibling_destinations = sibling_destinations
        self._outcomes = outcomes
        self._revisions = revisions
        self._next_seq: dict[RoomId, int] = {}
        self._seq_lock = asyncio.Lock()
        self._order = SealOrder()
        self._changing: dict[RoomId, list[Envelope]] = {}
        """Per room, our MEMBERSHIP changes sealed and not yet folded (`_members_now`)."""

    def take_turn(self, room: RoomId) -> SealTurn:
        """A send's place among our sends of `room`, taken as it is accepted (SPEC §15.4.5): it is
        sealed after every send that took one before, whatever each awaits first. The taker
        holds it in a `with` block around `seal(turn=...)`, which releases it once sealed."""
        return self._order.take(room)

    @property
    def _user(self) -> UserId:
        return self._keyring.user_id

    async def seal(
        self,
        room: RoomId,
        body: bytes,
        content_type: str,
        kind: Kind,
        *,
        written: WrittenTimes | None = None,
        acts_on: MessageId | None = None,
        to: frozenset[UserId] | None = None,
        turn: SealTurn | None = None,
    ) -> Sealed:
        """Seal our user's envelope for `room`, taking its sequence number; nothing is stored.

        Whoever shows the stored event (the client feed) can learn it here, before `commit`.
        `written` (a client's written and sent times) stamps it where it was written
        (SPEC §31.6). `acts_on` names the message an action acts on, for the store's index.
        `to` addresses a RECEIPT, and only a RECEIPT, to some members' homes; it takes no
        sequence number (SPEC §8.5, §16.2.3). While a home of those users or of ours has not
        advertised `addressed-receipts`, it goes in the form of the revision before instead:
        sequenced, to every member, gossiped (SPEC §20.7). `turn` (from `take_turn`, held by the
        caller, released here once sealed) is the send's place in the room's order of seals;
        None: it is taken on entry, so calls seal in the order they were made (SPEC §15.4.5),
        but for a RECEIPT, sealed as soon as it is ready (`OUT_OF_TURN_KINDS`).

        Raises:
            NotAuthorized: our user is not a member of `room`.
        """
        args = (room, body, content_type, kind, written, acts_on, to)
        if turn is not None:  # its taker holds it
            return await self._seal_in_turn(*args, turn)
        if kind in OUT_OF_TURN_KINDS:
            return await self._seal_in_turn(*args, out_of_turn())
        with self.take_turn(room) as own:
            return await self._seal_in_turn(*args, own)

    async def _seal_in_turn(
        self,
        room: RoomId,
        body: bytes,
        content_type: str,
        kind: Kind,
        written: WrittenTimes | None,
        acts_on: MessageId | None,
        to: frozenset[UserId] | None,
        turn: SealTurn,
    ) -> Sealed:
        # What is awaited before `turn.wait()` may differ between sends (a home's capability
        # answer, a store read): it runs alongside the sends ahead; nothing after it does. The
        # turn is released once sealed (the next send does not wait for this one's commit);
        # a failure before that leaves it to its taker's `with`.
        if kind is Kind.MEMBERSHIP:
            raise LocalProtocolError("membership changes go through change_membership")
        if to is not None and kind not in ADDRESSED_KINDS:
            raise LocalProtocolError(f"a {kind.name} is addressed to some members: RECEIPT only")
        if to is not None and not await self._revisions.speak(to, Level.ADDRESSED_RECEIPTS):
            to = None  # an older home would refuse the addressed form (SPEC §20.7)
        members = await self._members.of(room)
        if self._user not in members:
            raise NotAuthorized(f"not a member of room {room.hex()[:12]}")
        addressed = to is not None
        if self._encryption is None or not e2ee.encrypts(kind):
            await turn.wait()
            hlc = None if written is None else self._written_stamp(written)
            if not addressed:
                await self._load_seq(room)
            members = self._members_now(room, members)  # sealed after what changed meanwhile
            seq = UNSEQUENCED if addressed else self._next(room)
            envelope = self._seal(room, content_type, kind, body, seq=seq, hlc=hlc)
            turn.release()
            return Sealed(envelope=envelope, members=members, to=to, acts_on=acts_on)
        # Nothing awaits between the encryption and the sequence numbers: sends seal in the
        # order they were encrypted, so a session's ROOM_KEY precedes every message using it.
        # So who may get its shares addressed is asked first, for every member, when the send
        # may carry shares (it awaits only when a home is due to be asked, SPEC §20.7); one
        # that then carries shares all the same (a session started ahead) sends them in the
        # form before, which every home takes.
        await self._load_seq(room)
        keys_to: frozenset[UserId] = frozenset()
        if self._encryption.may_share(room, members):
            keys_to = await self._revisions.speakers(members, Level.ADDRESSED_ROOM_KEYS)
        await turn.wait()
        hlc = None if written is None else self._written_stamp(written)
        # The room's sends seal in the order they enter `encrypt` (its queue keeps it), and the
        # next send's turn comes only once this one has entered: releasing it here keeps the
        # sends queued behind a session being started encrypted together (SPEC §27.5).
        turn.release()
        # The members are read where the content is encrypted, after whatever this send waited
        # for (a home's answer, its turn, a session being prepared, the room's queue): one
        # added meanwhile is in history before this envelope (its sequence number and HLC come
        # after), so it is given the session or owed it from here; one removed meanwhile gets
        # no key of it (SPEC §27.9, §27.10.1).
        encryption = await self._encryption.encrypt(
            room, functools.partial(self._members_now, room, members), content_type, body
        )
        # A send woken from the room's queue seals on a later step of the loop than it was
        # encrypted on: one added in between is owed the session from its index (§27.13.1).
        try:
            members = self._members_now(room, encryption.members)
        except NotAuthorized:
            self._encryption.abandon(encryption)  # never sealed: its shares never go out
            raise
        if members != encryption.members:
            encryption = self._encryption.owe(encryption, members - encryption.members)
        room_keys = self._seal_keys(room, encryption, keys_to)
        seq = UNSEQUENCED if addressed else self._next(room)
        encrypted = self._seal(
            room, e2ee.ENCRYPTED_CONTENT_TYPE, kind, encryption.body, seq=seq, hlc=hlc
        )
        return Sealed(
            envelope=e2ee.opened_view(encrypted, content_type, body),
            members=members,
            to=to,
            acts_on=acts_on,
            room_keys=room_keys,
            encryption=encryption,
        )

    async def commit(self, sealed: Sealed, on_stored: OnStored | None = None) -> Envelope:
        """Store a sealed envelope durably (history + outbox in one commit, with the ROOM_KEY
        envelopes before it and the Megolm session's advance), then hand them to the outbox and
        gossip them. Returns once it is committed here: "sent". `on_stored` gets the
        arrival-log entries the commit gave them, in number order (the envelope last), as soon
        as it committed."""
        envelope, members = sealed.envelope, sealed.members
        siblings = self._sibling_destinations()  # our user's other homes get everything
        # The entries are handed to the worker in memory, so they are stored already leased:
        # the outbox serves them again by itself only if this node dies before the ack.
        due_ms = self._outbox.lease_due_ms()
        everyone_rows, everyone_absent = self._to_everyone(members, siblings)
        # A receipt goes to the homes of the users it names (SPEC §16.2.3); the room keys
        # sealed before it, and everything else, to every member (split once, not twice).
        if sealed.to is None:
            rows, absent = everyone_rows, everyone_absent
        else:
            recipients = tuple(sorted((sealed.to & members) - {self._user})) + siblings
            rows, absent = self._outbox.split(recipients)
        # Each destination's entries are queued in this order, the room keys first, so its
        # keys normally reach it before the messages that need them (SPEC §27.5.3). Most
        # sends carry none (their session's key went before): no calls for them.
        keys = (
            self._keys_to(sealed.room_keys, (everyone_rows, everyone_absent), siblings)
            if sealed.room_keys
            else []
        )
        requests = [
            *(_key_requests(keys, due_ms) if keys else ()),
            AppendRequest(
                envelope=envelope,
                outbox_to=rows,
                absent_to=absent,
                next_attempt_ms=due_ms,
                acts_on=sealed.acts_on or target_of(envelope),  # the clear view names it
            ),
        ]
        if sealed.encryption is None:
            appended = await self._store.run_grouped(self._store.store.append_entries, requests[0])
            entries = _stored_entries([appended])
        else:
            entries = await self._store_encrypted(requests, sealed.encryption)
        if on_stored is not None:
            on_stored(entries)
        self._sent.sent(envelope)  # the receipts that name it take it from memory
        if envelope.kind is Kind.RECALL:  # our own home purges it too (SPEC §31.1)
            await self._store.run(apply_recall, self._store.store, envelope)
            if (target := target_of(envelope)) is not None:
                self._sent.recalled(target)
        gossiped = is_gossiped(envelope, members)
        for each, to, marked in [*keys, (envelope, rows, absent)]:
            self._outbox.submit(each, to, marked)
            if gossiped and is_sequenced(each):  # an addressed room key never (SPEC §27.5.3)
                self._publish(each)
        return envelope

    async def share_ahead(self, room: RoomId) -> int:
        """Share the room's session key with the member devices that lack it, ahead of our
        next send (`RoomSender.share_ahead`, SPEC §27.10.3): its ROOM_KEY envelopes alone,
        sealed in the room's order of seals and committed with the session's advance and whom
        its key went to, as a send's are. Returns how many ROOM_KEY envelopes went out.

        Raises:
            NotAuthorized: our user was removed from `room` while the shares were made.
        """
        sender = self._encryption
        if sender is None:
            return 0
        members = await self._members.of(room)
        if self._user not in members or is_direct_room(room, members):
            return 0  # a direct room's message goes with its key in one delivery, no gossip
        if not sender.wants_ahead(room, members):
            return 0
        await self._load_seq(room)
        # A few asks at a time: no user waits on this, and a send meanwhile asks at once
        keys_to = await self._revisions.speakers(
            members, Level.ADDRESSED_ROOM_KEYS, background=True
        )
        with self.take_turn(room) as turn:  # a sequenced ROOM_KEY takes the room's next number
            await turn.wait()
            turn.release()
            shares = await sender.share_ahead(
                room, functools.partial(self._members_now, room, members)
            )
            if shares is None:
                return 0
            try:
                members = self._members_now(room, shares.members)
            except NotAuthorized:
                sender.abandon(shares)  # never sealed: its shares never go out
                raise
            room_keys = self._seal_keys(room, shares, keys_to)
        siblings = self._sibling_destinations()
        everyone: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())
        if any(key.to is None for key in room_keys):  # a sequenced one goes to every member
            everyone = self._to_everyone(members, siblings)
        keys = self._keys_to(room_keys, everyone, siblings)
        await self._store_encrypted(_key_requests(keys, self._outbox.lease_due_ms()), shares)
        for key, to, marked in keys:
            self._outbox.submit(key, to, marked)
            if is_sequenced(key) and is_gossiped(key, members):  # an addressed one never
                self._publish(key)
        return len(keys)

    def _to_everyone(
        self, members: frozenset[UserId], siblings: tuple[bytes, ...]
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Every other member and our other homes as outbox rows and absent markers: members
        whose homes no record names get a marker, not an entry each (SPEC §11.5.2)."""
        return self._outbox.split(tuple(sorted(members - {self._user})) + siblings)

    def _keys_to(
        self,
        room_keys: tuple[SealedKey, ...],
        everyone: tuple[tuple[bytes, ...], tuple[bytes, ...]],
        siblings: tuple[bytes, ...],
    ) -> list[tuple[Envelope, tuple[bytes, ...], tuple[bytes, ...]]]:
        """Each ROOM_KEY with its outbox destinations and absent markers: a sequenced one to
        `everyone` (split), an addressed one to its user's homes (none: our own) and our other
        homes (SPEC §27.5.3)."""
        return [
            (key.envelope, *everyone)
            if key.to is None
            else (key.envelope, *self._outbox.split(tuple({key.to} - {self._user}) + siblings))
            for key in room_keys
        ]

    async def _store_encrypted(
        self, requests: list[AppendRequest], encryption: Encryption
    ) -> list[FeedEntry]:
        sender = self._encryption
        if sender is None:
            raise LocalProtocolError("an encrypted seal without a room sender")
        try:
            stored = await self._store.run_grouped(self._commit_encrypted, (requests, encryption))
            return _stored_entries(stored)
        except HearthError:
            sender.abandon(encryption)  # its ROOM_KEY bodies never went out
            raise

    def _commit_encrypted(
        self, sends: list[tuple[list[AppendRequest], Encryption]]
    ) -> list[list[Appended]]:
        """Store the ROOM_KEY envelopes and encrypted envelopes of the sends queued together,
        the plaintexts for our own view and each session's advance: one call of a store write
        batch, all or nothing, with one pickle per session (SPEC §27.8)."""
        sender, store = self._encryption, self._store.store
        if sender is None:
            raise LocalProtocolError("an encrypted seal without a room sender")
        results = store.append_entries([request for requests, _ in sends for request in requests])
        sender.persist(store, [encryption for _, encryption in sends])
        per_send: list[list[Appended]] = []
        plaintexts = []
        for requests, encryption in sends:
            mine, results = results[: len(requests)], results[len(requests) :]
            per_send.append(mine)
            if encryption.keys_only:  # shared ahead: no content of ours to keep
                continue
            if mine[-1][0] is AppendResult.STORED:  # as encrypted: not encoded again
                plaintexts.append((requests[-1].envelope.message_id, encryption.plaintext))
        store.put_plaintexts(plaintexts)
        return per_send

    async def send(self, room: RoomId, body: bytes, content_type: str, kind: Kind) -> Envelope:
        """`seal`, then `commit`."""
        return await self.commit(await self.seal(room, body, content_type, kind))

    async def check_membership(self, room: RoomId, change: MembershipChange) -> None:
        """Would the rules allow our `change` now (SPEC §12.6)? Nothing is sealed for real.

        Raises:
            NotAuthorized: the rules do not allow it.
            MembershipLimit: the room or our user is at its bound.
        """
        await self._check_membership_body(room, encode_membership(change))

    async def _check_membership_body(self, room: RoomId, body: bytes) -> None:
        probe = self._seal(room, MEMBERSHIP_CONTENT_TYPE, Kind.MEMBERSHIP, body, seq=1)
        await self._store.run(self._rooms.check_own, self._store.store, probe)

    async def change_membership(
        self, room: RoomId, change: MembershipChange, *, welcome: tuple[UserId, ...] = ()
    ) -> Envelope:
        """Seal and commit our MEMBERSHIP change atomically (SPEC §12.6), then deliver it.

        The change is checked against the room's folded state first; the envelope, its outbox
        entries and the new member rows then commit in one transaction, or nothing does.
        `welcome` (an ADD's new members, SPEC §12.1.1) get the room's earlier MEMBERSHIP events
        queued first, in history order, and the ADD after them, so their folds see them in
        order.

        Raises:
            NotAuthorized: the rules do not allow the change now; nothing was written.
            MembershipLimit: the room or our user is at its bound; nothing was written.
        """
        body = encode_membership(change)
        # Checked before a sequence number is taken: a refusal must not leave a gap in it.
        await self._check_membership_body(room, body)
        members = await self._members.of(room)
        await self._load_seq(room)
        sender = self._encryption
        if sender is not None:  # a send encrypted before it must seal before it
            await sender.hold_queue(room)
        try:
            seq = self._next(room)
            envelope = self._seal(room, MEMBERSHIP_CONTENT_TYPE, Kind.MEMBERSHIP, body, seq=seq)
            changing = self._changing.setdefault(room, [])
            changing.append(envelope)  # our sends sealed after it count it in (`_members_now`)
        finally:
            if sender is not None:
                sender.release_queue(room)  # its sends are encrypted for the members after it
        # the new member's entries are queued with the room's history (in `_commit_own`)
        skip = {self._user, *welcome}
        others = tuple(sorted(members - skip))
        recipients, absent = self._outbox.split(others + self._sibling_destinations())
        request = AppendRequest(
            envelope=envelope,
            outbox_to=recipients,
            absent_to=absent,
            next_attempt_ms=self._outbox.lease_due_ms(),
        )
        # a welcome queues the room's whole membership history: off the loop's thread
        commit = self._store.run_long if welcome else self._store.run
        try:
            outcome = await commit(
                _commit_own,
                self._rooms,
                self._store.store,
                request,
                welcome,
                self._clock.now_ms(),
            )
        except StorageError:
            # the batch did not commit: what the fold holds in memory may be ahead of it
            self._rooms.forget(room)
            raise
        except HearthError:
            self._give_back_seq(room, seq)  # refused after all (a change raced in): no gap
            raise
        finally:
            changing.remove(envelope)  # folded, or undone
            if not changing:
                del self._changing[room]
        self._outcomes.publish(outcome)
        self._outbox.submit(envelope, recipients, absent)
        if welcome:
            self._outbox.wake()  # its entries wait in the store, due now, in history order
        return envelope

    async def typing(self, room: RoomId, active: bool) -> bytes:
        """Our typing indicator for `room`, signed, as the payload `ContactSignals` pushes to
        our contacts among its members (SPEC §17.1, §32.4); never stored, never gossiped.

        Raises:
            NotAuthorized: our user is not a member of `room`.
        """
        if self._user not in await self._members.of(room):
            raise NotAuthorized(f"not a member of room {room.hex()[:12]}")
        envelope = seal(
            self._keyring.device,
            kind=Kind.TYPING,
            room=room,
            sender_user=self._user,
            seq=1,  # ephemeral: freshness comes from the HLC, never from the sequence
            hlc=self._hlc.ephemeral(),
            content_type=TYPING_CONTENT_TYPE,
            body=encode_typing(active),
        )
        return encode_gossip(self._keyring.certificate_bytes, envelope.wire)

    def _seal(
        self,
        room: RoomId,
        content_type: str,
        kind: Kind,
        body: bytes,
        *,
        seq: int,
        hlc: Timestamp | None = None,
    ) -> Envelope:
        return seal(
            self._keyring.device,
            kind=kind,
            room=room,
            sender_user=self._user,
            seq=seq,
            hlc=self._hlc.stamp() if hlc is None else hlc,
            content_type=content_type,
            body=body,
        )

    def _seal_keys(
        self, room: RoomId, encryption: Encryption, addressed: frozenset[UserId]
    ) -> tuple[SealedKey, ...]:
        """The ROOM_KEY envelopes of a send's shares (SPEC §27.5.2, §27.5.3): the sequenced
        one (if any) takes its number here, before the envelope's."""
        bundle = encryption.sender_bundle
        if bundle is None or not encryption.key_shares:
            return ()
        return tuple(
            SealedKey(
                envelope=self._seal(
                    room,
                    e2ee.ROOM_KEY_CONTENT_TYPE,
                    Kind.ROOM_KEY,
                    e2ee.encode_room_key_shares(group.shares),
                    seq=self._next(room) if group.to is None else UNSEQUENCED,
                ),
                to=group.to,
            )
            for group in e2ee.group_shares(bundle, encryption.key_shares, addressed)
        )

    def _written_stamp(self, written: WrittenTimes) -> Timestamp:
        return written_stamp(
            written_ms=written.written_ms,
            sent_ms=written.sent_ms,
            received_ms=written.received_ms,
            now=self._hlc.stamp(),
        )

    def _publish(self, envelope: Envelope) -> None:
        payload = encode_gossip(self._keyring.certificate_bytes, envelope.wire)
        self._gossip.publish_nowait(room_topic(envelope.room), payload)

    async def _load_seq(self, room: RoomId) -> None:
        """Seed our next sequence number in `room` from the store, once."""
        if room not in self._next_seq:
            async with self._seq_lock:
                if room not in self._next_seq:
                    last = await self._store.read(
                        self._store.store.last_seq, room, self._keyring.device_id
                    )
                    self._next_seq[room] = last + 1

    def _next(self, room: RoomId) -> int:
        """Take our next sequence number in `room` (seeded by `_load_seq`)."""
        seq = self._next_seq[room]
        self._next_seq[room] = seq + 1
        return seq

    def _members_now(self, room: RoomId, read: frozenset[UserId]) -> frozenset[UserId]:
        """The room's members as memory holds them now, with our changes already sealed (a
        sequence number taken) whose commit, which folds them, is still under way: an envelope
        sealed after such a change is in history after it. `read` (read earlier) when memory
        no longer holds the room. Our user must still be one.

        Raises:
            NotAuthorized: our user was removed from `room` meanwhile.
        """
        state = self._rooms.view(room)
        if state is None:
            return read
        changing = self._changing.get(room)
        if changing:
            state = state.copy()
            for change in changing:
                state.apply(change)  # refused, so no change, once folded already
        members = frozenset(state.members)
        if self._user not in members:
            raise NotAuthorized(f"not a member of room {room.hex()[:12]}")
        return members

    def _give_back_seq(self, room: RoomId, seq: int) -> None:
        """Return `seq` unless a later one was taken meanwhile (then the gap stays)."""
        if self._next_seq.get(room) == seq + 1:
            self._next_seq[room] = seq


def _commit_own(
    rooms: RoomRegistry,
    store: Store,
    request: AppendRequest,
    welcome: tuple[UserId, ...],
    now_ms: int,
) -> StoreOutcome:
    """Check, store, queue and fold our MEMBERSHIP change: one call of a store write batch,
    so a refusal (or any failure) undoes every write of it (SPEC §12.6)."""
    envelope = request.envelope
    rooms.check_own(store, envelope)  # again: the state may have moved since the first look
    earlier = rooms.membership_events(envelope.room)
    if store.append_many([request])[0] is not AppendResult.STORED:
        raise LocalProtocolError("own membership change not stored")
    # Due in history order, all before now: each new member folds them in order.
    first_ms = now_ms - len(earlier) - 1
    plan = [(m, first_ms + i) for i, m in enumerate([*earlier, envelope.message_id])]
    for user in welcome:
        store.enqueue_many(user, plan)
    outcome = StoreOutcome()
    if rooms.note_stored(store, envelope, now_ms=now_ms):  # last: memory follows the store
        outcome.membership_changed.add(envelope.room)
    return outcome
