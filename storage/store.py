"""`KvStore`: the `api.Store` protocol over any `KvEngine`, one transaction per public method.

`LmdbStore` and `MemoryStore` are this class over their engines; the logic lives in the `_txn`
helpers of `append`, `history`, `outbox`, `relay`, `rooms` and `directory`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Self

from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.errors import (
    DamagedBlob,
    LocalProtocolError,
    QuotaExceeded,
    UnreadableItem,
)
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.media_seal import MediaSeal

from . import (
    absent,
    actions,
    arrivals,
    clients,
    crypto,
    directory,
    history,
    media_refs,
    outbox,
    relay,
    rooms,
    sequences,
)
from .api import (
    DEFAULT_RELAY_QUOTA,
    RETENTION_MS,
    RETENTION_SETTING,
    AppendRequest,
    AppendResult,
    ClientRecord,
    Contact,
    ConversationPage,
    Cursor,
    DeliveryStatus,
    DeviceRecord,
    Direction,
    FeedEntry,
    FeedPage,
    FriendRequest,
    HistoryPage,
    InboundSession,
    MediaInfo,
    MediaReference,
    Member,
    OutboundSession,
    OutboxEntry,
    Outcome,
    Profile,
    PurgeReport,
    PushSubscription,
    RelayEntry,
    RelayQuota,
    RelayUsage,
    StatusRecord,
    Store,
    StoredEvent,
    Trust,
)
from .append import append_batch_txn, check_appendable
from .blobs import BlobStore
from .keys import (
    ID_BYTES,
    WITHDRAWN_SLOT,
    Table,
    contact_key,
    pack_u64,
    prefix_end,
    push_key,
)
from .kv import KvEngine, KvTxn, T
from .records import decode_u64_at
from .staged import StagedWrites

__all__ = ["RELAY_EXPIRED_PER_PUT", "KvStore"]

RELAY_EXPIRED_PER_PUT: Final = 1_024
"""Expired relay entries a put drops first, so they stop counting against any bound at once
(the purge service drops the rest in its own batches)."""


class KvStore:
    """Everything a node persists, over an ordered key-value engine (see `api.Store`)."""

    def __init__(
        self, engine: KvEngine, blobs: BlobStore, *, relay_quota: RelayQuota = DEFAULT_RELAY_QUOTA
    ) -> None:
        self._engine = engine
        self._blobs = blobs
        self._relay_quota = relay_quota
        self._holds = 0

    @property
    def where(self) -> str:
        """The store's path (or `:memory:`)."""
        return self._engine.where

    # --- history -------------------------------------------------------------------------

    def append(self, request: AppendRequest) -> AppendResult:
        """Store one event and enqueue its outbox entries in one transaction."""
        return self.append_many([request])[0]

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Store many events in one transaction (group commit); durable when this returns."""
        for request in requests:
            check_appendable(request)
        if not requests:
            return []
        return self._engine.write(lambda txn: append_batch_txn(txn, requests))

    def append_entries(
        self, requests: Sequence[AppendRequest]
    ) -> list[tuple[AppendResult, FeedEntry | None]]:
        """`append_many`, with each stored event's arrival-log entry as this transaction
        numbered it (None where nothing was stored)."""
        for request in requests:
            check_appendable(request)

        def append(txn: KvTxn) -> list[tuple[AppendResult, FeedEntry | None]]:
            entries: list[FeedEntry | None] = []  # made anew if the write is retried
            results = append_batch_txn(txn, requests, entries)
            return list(zip(results, entries, strict=True))

        return self._engine.write(append) if requests else []

    def actions_of(self, target: bytes) -> list[StoredEvent]:
        """The stored edits, recalls and reactions that name `target`."""
        with self._engine.read() as txn:
            return actions.actions_of_txn(txn, target)

    def index_action(self, target: bytes, action: bytes) -> None:
        """Note that the stored action `action` names `target`."""
        self._engine.write(lambda txn: actions.index_action_txn(txn, target, action))

    def index_media(self, envelopes: Sequence[Envelope]) -> None:
        """Note the blobs these stored envelopes reference (opened since they were stored)."""

        def note(txn: KvTxn) -> None:
            for envelope in envelopes:
                media_refs.note_media_txn(txn, envelope)

        self._engine.write(note)

    def withdraw(self, target: bytes, recall: bytes, sender: bytes) -> bool:
        """Record a recall; purge the body once nothing here needs it (SPEC §31.1)."""
        return self._engine.write(lambda txn: actions.withdraw_txn(txn, target, recall, sender))

    def withdrawn_by(self, target: bytes) -> UserId | None:
        """Who recalled `target` here, if anyone did."""
        with self._engine.read() as txn:
            return actions.withdrawn_by_txn(txn, target)

    def hide_message(self, user: bytes, message: bytes) -> bool:
        """Hide `message` from `user`'s views (SPEC §31.7)."""
        return self._engine.write(lambda txn: actions.hide_txn(txn, user, message))

    def hidden_messages(self, user: bytes, messages: Sequence[bytes]) -> set[MessageId]:
        """Which of `messages` `user` hid."""
        with self._engine.read() as txn:
            return actions.hidden_txn(txn, user, messages)

    def get_event(self, message_id: bytes) -> StoredEvent | None:
        """The stored event with this id."""
        with self._engine.read() as txn:
            return history.get_event_txn(txn, message_id)

    def get_events(
        self, message_ids: Iterable[bytes], *, in_hand: Mapping[bytes, Envelope] | None = None
    ) -> dict[MessageId, StoredEvent]:
        """The stored events of these ids that the store holds, read in one snapshot."""
        with self._engine.read() as txn:
            found = ((m, history.get_event_txn(txn, m, in_hand)) for m in message_ids)
            return {MessageId(m): event for m, event in found if event is not None}

    def page_history(
        self, room: bytes, *, direction: Direction, cursor: Cursor | None = None, limit: int = 50
    ) -> HistoryPage:
        """Up to `limit` events of `room` beyond `cursor` in `direction`, oldest first."""
        with self._engine.read() as txn:
            return history.page_history_txn(
                txn, room, direction=direction, cursor=cursor, limit=limit
            )

    def set_status(
        self, message_id: bytes, recipient: bytes, status: DeliveryStatus, *, now_ms: int
    ) -> bool:
        """Raise a recipient's status of a stored message."""
        return self._engine.write(
            lambda txn: history.set_status_txn(txn, message_id, recipient, status, now_ms)
        )

    def set_statuses(
        self, updates: Sequence[tuple[bytes, bytes, DeliveryStatus]], *, now_ms: int
    ) -> list[bool]:
        """`set_status` for many (message id, recipient, status) in one transaction."""
        return self._engine.write(
            lambda txn: [
                history.set_status_txn(txn, message_id, recipient, status, now_ms)
                for message_id, recipient, status in updates
            ]
        )

    def last_seq(self, room: bytes, sender_device: bytes) -> int:
        """The highest sequence number of `sender_device` stored in `room`, 0 if none."""
        with self._engine.read() as txn:
            return sequences.last_seq_txn(txn, room, sender_device)

    def sender_events(
        self, room: bytes, sender_device: bytes, first_seq: int, last_seq: int
    ) -> list[StoredEvent]:
        """Events of one sender in one room by sequence number (see `api.HistoryStore`)."""
        with self._engine.read() as txn:
            return history.sender_events_txn(txn, room, sender_device, first_seq, last_seq)

    def last_arrival(self) -> int:
        """The newest arrival number, 0 before the first stored event."""
        with self._engine.read() as txn:
            return arrivals.last_arrival_txn(txn)

    def renumber_arrivals(self, message_ids: Sequence[bytes]) -> int:
        """Move the arrival-log entries of these stored events to the log's end, in order
        (storage/arrivals.py `renumber_txn`); how many moved."""

        def move(txn: KvTxn) -> int:
            keys = (txn.get(Table.MESSAGE_IDS, m) for m in message_ids)
            return arrivals.renumber_txn(txn, dict.fromkeys(k for k in keys if k is not None))

        return self._engine.write(move)

    def arrivals_after(
        self, after: int, *, limit: int, in_hand: Mapping[bytes, Envelope] | None = None
    ) -> FeedPage:
        """Up to `limit` arrival-log entries numbered above `after`, in number order."""
        with self._engine.read() as txn:
            return arrivals.arrivals_after_txn(txn, after, limit, in_hand)

    def statuses(self, message_id: bytes) -> list[StatusRecord]:
        """Every recipient's status of one message."""
        with self._engine.read() as txn:
            return history.statuses_txn(txn, message_id)

    # --- outbox --------------------------------------------------------------------------

    def enqueue(self, destination: bytes, message_id: bytes, *, next_attempt_ms: int) -> bool:
        """Add a delivery of a stored message; False if already pending."""
        return self._engine.write(
            lambda txn: outbox.enqueue_txn(txn, destination, message_id, next_attempt_ms)
        )

    def enqueue_many(self, destination: bytes, plan: Sequence[tuple[bytes, int]]) -> int:
        """Enqueue (message id, first attempt) pairs in one transaction; how many were new."""
        return self._engine.write(lambda txn: outbox.enqueue_many_txn(txn, destination, plan))

    def take_due(self, *, now_ms: int, limit: int, lease_ms: int) -> list[OutboxEntry]:
        """Hand out due entries, counting an attempt and leasing each for `lease_ms`."""
        return self._engine.write(lambda txn: outbox.take_due_txn(txn, now_ms, limit, lease_ms))

    def next_due_ms(self) -> int | None:
        """When the earliest queued entry comes due (leased ones included); None if none."""
        with self._engine.read() as txn:
            return outbox.next_due_txn(txn)

    def ack(self, destination: bytes, message_id: bytes) -> bool:
        """Remove a delivered entry."""
        return self.ack_many(destination, [message_id]) == 1

    def reschedule(
        self, destination: bytes, message_id: bytes, *, next_attempt_ms: int, error: str | None
    ) -> bool:
        """Move an entry to `next_attempt_ms` with its last error."""
        return self._engine.write(
            lambda txn: outbox.reschedule_txn(txn, destination, message_id, next_attempt_ms, error)
        )

    def ack_many(self, destination: bytes, message_ids: Sequence[bytes]) -> int:
        """Remove delivered entries in one transaction; returns how many were pending. A
        recalled body that waited only for these deliveries goes with them (SPEC §31.1)."""

        def ack(txn: KvTxn) -> int:
            acked = outbox.ack_many_txn(txn, destination, message_ids)
            actions.purge_delivered_withdrawn_txn(txn, message_ids)
            return acked

        return self._engine.write(ack)

    def reschedule_many(
        self, destination: bytes, plan: Sequence[tuple[bytes, int]], *, error: str | None
    ) -> int:
        """Move (message id, next attempt) entries in one transaction with their last error."""
        return self._engine.write(
            lambda txn: outbox.reschedule_many_txn(txn, destination, plan, error)
        )

    def park_many(self, destination: bytes, message_ids: Sequence[bytes]) -> int:
        """Take a down destination's entries out of the due queue, in order."""
        return self._engine.write(lambda txn: outbox.park_many_txn(txn, destination, message_ids))

    def unpark(self, destination: bytes, *, now_ms: int, limit: int) -> int:
        """Turn the destination's markers into parked entries (SPEC §11.5.2), then put up to
        `limit` parked entries, oldest first, back in the queue, due now."""

        def unpark_txn(txn: KvTxn) -> int:
            absent.expand_txn(txn, destination)
            return outbox.unpark_txn(txn, destination, now_ms, limit)

        return self._engine.write(unpark_txn)

    def parked_destinations(self) -> list[bytes]:
        """Destinations with parked entries or markers."""
        with self._engine.read() as txn:
            parked = outbox.parked_destinations_txn(txn)
            return sorted({*parked, *absent.absent_destinations_txn(txn)})

    def absent_markers(self, destination: bytes) -> list[tuple[bytes, bytes, int, int]]:
        """(room, sender device, first seq, last seq) of each marker owed to `destination`."""
        with self._engine.read() as txn:
            return absent.markers_txn(txn, destination)

    # --- relay ---------------------------------------------------------------------------

    def relay_recipients(self) -> list[UserId]:
        """Recipients that hold relayed envelopes."""
        with self._engine.read() as txn:
            return relay.relay_recipients_txn(txn)

    def relay_put(
        self,
        recipient: bytes,
        envelope: Envelope,
        *,
        peer: bytes,
        known: bool,
        now_ms: int,
        ttl_ms: int,
    ) -> bool:
        """Hold an envelope for another user's home node (see `api.RelayInbox.relay_put`)."""
        holder = relay.Holder(known=known, sender=envelope.sender_user, peer=peer)
        with self._engine.read() as txn:
            expired = relay.relay_expired_txn(txn, now_ms)
            damaged = relay.damaged_shares_txn(txn, holder)
        if expired:
            # Its own write (nested in a batch): what expired is gone even if the put is refused.
            self._engine.write(
                lambda txn: relay.purge_relay_txn(txn, now_ms, RELAY_EXPIRED_PER_PUT)
            )
        if damaged:  # its own write too: the repair stays even if the put is refused
            self._engine.write(lambda txn: relay.repair_shares_txn(txn, holder))
        evicted: list[tuple[bytes, int]] = []

        def put(txn: KvTxn) -> bool:
            evicted.clear()  # a write may run its function again
            return relay.relay_put_txn(
                txn,
                recipient,
                envelope,
                holder=holder,
                now_ms=now_ms,
                ttl_ms=ttl_ms,
                quota=self._relay_quota,
                evicted=evicted,
            )

        try:
            return self._engine.write(put)
        except QuotaExceeded:
            # Refused after evicting: a victim's share or usage row recounted in the put's
            # transaction went with it; kept in a write of its own, it is recounted once, not
            # on every such put.
            if evicted:
                with self._engine.read() as txn:
                    damaged = relay.damaged_evicted_txn(txn, evicted)
                if damaged:
                    self._engine.write(lambda txn: relay.repair_evicted_txn(txn, evicted))
            raise

    def relay_take(self, recipient: bytes, *, now_ms: int, limit: int) -> list[RelayEntry]:
        """The oldest unexpired envelopes held for `recipient`."""
        with self._engine.read() as txn:
            return relay.relay_take_txn(txn, recipient, now_ms=now_ms, limit=limit)

    def relay_ack(self, recipient: bytes, message_ids: Sequence[bytes]) -> int:
        """Drop delivered envelopes."""
        return self._engine.write(lambda txn: relay.relay_ack_txn(txn, recipient, message_ids))

    def relay_usage(self, recipient: bytes) -> RelayUsage:
        """Count and bytes held for `recipient`."""
        with self._engine.read() as txn:
            return relay.relay_usage_txn(txn, recipient)

    # --- rooms and conversations ---------------------------------------------------------

    def add_member(self, room: bytes, user: bytes, *, role: int, local: bool, now_ms: int) -> None:
        """Add or update a member in both directions."""
        self._engine.write(
            lambda txn: rooms.add_member_txn(txn, room, user, role=role, local=local, now_ms=now_ms)
        )

    def remove_member(self, room: bytes, user: bytes) -> bool:
        """Remove a member from both directions."""
        return self._engine.write(lambda txn: rooms.remove_member_txn(txn, room, user))

    def members(self, room: bytes) -> list[Member]:
        """Members of `room`."""
        with self._engine.read() as txn:
            return rooms.members_txn(txn, room)

    def rooms_of(self, user: bytes) -> list[RoomId]:
        """Rooms `user` belongs to."""
        with self._engine.read() as txn:
            return rooms.rooms_of_txn(txn, user)

    def open_conversation(self, user: bytes, room: bytes, *, now_ms: int) -> None:
        """List `room` for `user`."""
        self._engine.write(lambda txn: rooms.open_conversation_txn(txn, user, room, now_ms=now_ms))

    def conversations(
        self, user: bytes, *, page_size: int, page_number: int = 1
    ) -> ConversationPage:
        """A page of `user`'s conversations, latest activity first."""
        with self._engine.read() as txn:
            return rooms.conversations_txn(txn, user, page_size=page_size, page_number=page_number)

    def delete_conversation(self, user: bytes, room: bytes) -> bool:
        """Unlist `room` for `user`."""
        return self._engine.write(lambda txn: rooms.delete_conversation_txn(txn, user, room))

    # --- users, contacts, devices, push --------------------------------------------------

    def put_profile(self, profile: Profile) -> None:
        """Store or replace a profile."""
        self._engine.write(lambda txn: directory.put_profile_txn(txn, profile))

    def get_profile(self, user: bytes) -> Profile | None:
        """The stored profile of `user`."""
        with self._engine.read() as txn:
            return directory.get_profile_txn(txn, user)

    def find_handle(self, handle: str) -> list[UserId]:
        """Users whose profile carries `handle`."""
        with self._engine.read() as txn:
            return directory.find_handle_txn(txn, handle)

    def add_contact(self, owner: bytes, contact: bytes, *, now_ms: int) -> None:
        """Put `contact` on `owner`'s list."""
        self._engine.write(lambda txn: directory.add_contact_txn(txn, owner, contact, now_ms))

    def set_trust(self, user: UserId, device: DeviceId, trust: Trust, *, now_ms: int) -> None:
        """Record what verification settled about `user`'s `device` key."""
        value = bytes([trust]) + pack_u64(now_ms)
        self._engine.write(lambda txn: txn.put(Table.TRUST, bytes(user) + bytes(device), value))

    def trusted_devices(self, user: UserId) -> dict[DeviceId, Trust]:
        """`user`'s device keys with a trust state."""
        with self._engine.read() as txn:
            return {
                DeviceId(key[ID_BYTES:]): Trust(value[0])
                for key, value in txn.scan(Table.TRUST, user, prefix_end(user))
            }

    def trusted_users(self) -> dict[UserId, dict[DeviceId, Trust]]:
        """Every user with a device key of a trust state, with those keys."""
        users: dict[UserId, dict[DeviceId, Trust]] = {}
        with self._engine.read() as txn:
            for key, value in txn.scan(Table.TRUST, b"", b"\xff" * (2 * ID_BYTES + 1)):
                device = DeviceId(key[ID_BYTES:])
                users.setdefault(UserId(key[:ID_BYTES]), {})[device] = Trust(value[0])
        return users

    def remove_contact(self, owner: bytes, contact: bytes) -> bool:
        """Take `contact` off `owner`'s list."""
        return self._engine.write(
            lambda txn: txn.delete(Table.CONTACTS, contact_key(owner, contact))
        )

    def is_contact(self, owner: bytes, contact: bytes) -> bool:
        """Is `contact` on `owner`'s list?"""
        with self._engine.read() as txn:
            return txn.get(Table.CONTACTS, contact_key(owner, contact)) is not None

    def contacts(self, owner: bytes) -> list[Contact]:
        """`owner`'s contacts."""
        with self._engine.read() as txn:
            return directory.contacts_txn(txn, owner)

    def put_friend_request(self, request: FriendRequest) -> bool:
        """Record a pending friend request."""
        return self._engine.write(lambda txn: directory.put_friend_request_txn(txn, request))

    def friend_requests_sent(self, sender: bytes) -> list[FriendRequest]:
        """Requests `sender` made that are still pending."""
        with self._engine.read() as txn:
            return directory.friend_requests_sent_txn(txn, sender)

    def friend_requests(self, recipient: bytes) -> list[FriendRequest]:
        """Requests pending for `recipient`."""
        with self._engine.read() as txn:
            return directory.friend_requests_txn(txn, recipient)

    def accept_friend_request(self, sender: bytes, recipient: bytes, *, now_ms: int) -> bool:
        """Drop the request and make both users contacts."""
        return self._engine.write(
            lambda txn: directory.accept_friend_request_txn(txn, sender, recipient, now_ms)
        )

    def delete_friend_request(self, sender: bytes, recipient: bytes) -> bool:
        """Decline or withdraw a request."""
        return self._engine.write(
            lambda txn: directory.delete_friend_request_txn(txn, sender, recipient)
        )

    def put_device(self, record: DeviceRecord) -> None:
        """Store or replace a device."""
        self._engine.write(lambda txn: directory.put_device_txn(txn, record))

    def devices(self, user: bytes) -> list[DeviceRecord]:
        """A user's devices."""
        with self._engine.read() as txn:
            return directory.devices_txn(txn, user)

    def device_owner(self, device: bytes) -> UserId | None:
        """The user a device belongs to."""
        with self._engine.read() as txn:
            return directory.device_owner_txn(txn, device)

    def put_push_subscription(self, subscription: PushSubscription) -> None:
        """Store or replace a push subscription."""
        self._engine.write(lambda txn: directory.put_push_txn(txn, subscription))

    def push_subscriptions(self, user: bytes) -> list[PushSubscription]:
        """A user's push subscriptions."""
        with self._engine.read() as txn:
            return directory.push_subscriptions_txn(txn, user)

    def add_push_subscription(self, subscription: PushSubscription, max_per_user: int) -> bool:
        """Store a new push subscription unless its user has `max_per_user` already."""

        def add(txn: KvTxn) -> bool:
            if len(directory.push_subscriptions_txn(txn, subscription.user)) >= max_per_user:
                return False
            directory.put_push_txn(txn, subscription)
            return True

        return self._engine.write(add)

    def delete_push_subscription(self, user: bytes, subscription_id: bytes) -> bool:
        """Forget a push subscription."""
        return self._engine.write(
            lambda txn: txn.delete(Table.PUSH, push_key(user, subscription_id))
        )

    # --- paired API clients (SPEC §15.7) ------------------------------------------------

    def add_client(self, record: ClientRecord, max_clients: int) -> bool:
        """Store a new client unless `max_clients` are paired already."""
        return self._engine.write(lambda txn: clients.add_client_txn(txn, record, max_clients))

    def clients(self) -> list[ClientRecord]:
        """Every paired client, by client id."""
        with self._engine.read() as txn:
            return clients.clients_txn(txn)

    def delete_client(self, client_id: bytes) -> bool:
        """Forget a client."""
        return self._engine.write(lambda txn: txn.delete(Table.CLIENTS, client_id))

    # --- end-to-end encryption state (SPEC §27.8) -----------------------------------------

    def crypto_account(self) -> bytes | None:
        """The Olm account's pickle, if any."""
        with self._engine.read() as txn:
            return crypto.account_txn(txn)

    def set_crypto_account(self, pickle: bytes) -> None:
        """Replace the Olm account's pickle."""
        self._engine.write(lambda txn: crypto.put_account_txn(txn, pickle))

    def olm_sessions(self, peer_curve: bytes) -> list[tuple[bytes, bytes]]:
        """(session id, pickle) of the Olm sessions with `peer_curve`."""
        with self._engine.read() as txn:
            return crypto.olm_sessions_txn(txn, peer_curve)

    def put_olm_session(self, peer_curve: bytes, session_id: bytes, pickle: bytes) -> None:
        """Store or replace an Olm session."""
        self._engine.write(
            lambda txn: crypto.put_olm_session_txn(txn, peer_curve, session_id, pickle)
        )

    def outbound_session(self, room: RoomId) -> OutboundSession | None:
        """Our outbound Megolm session in `room`."""
        with self._engine.read() as txn:
            return crypto.outbound_session_txn(txn, room)

    def put_outbound_session(self, room: RoomId, session: OutboundSession) -> None:
        """Store our outbound Megolm session in `room`."""
        self._engine.write(lambda txn: crypto.put_outbound_session_txn(txn, room, session))

    def inbound_session(self, room: RoomId, session_id: bytes) -> InboundSession | None:
        """An inbound Megolm session of `room`."""
        with self._engine.read() as txn:
            return crypto.inbound_session_txn(txn, room, session_id)

    def put_inbound_session(self, room: RoomId, session_id: bytes, session: InboundSession) -> bool:
        """Keep an inbound session unless its id is kept already."""
        return self._engine.write(
            lambda txn: crypto.put_inbound_session_txn(txn, room, session_id, session)
        )

    def replace_inbound_session(
        self, room: RoomId, session_id: bytes, session: InboundSession
    ) -> None:
        """Keep `session` in place of the one of that id."""
        self._engine.write(
            lambda txn: crypto.replace_inbound_session_txn(txn, room, session_id, session)
        )

    def keep_opened(
        self, session_id: bytes, index: int, message_id: MessageId, plaintext: bytes
    ) -> MessageId | None:
        """Claim the Megolm index for `message_id` and keep its plaintext; the earlier claim.

        The same message opened again keeps its plaintext again: a refusal or a purge took the
        plaintext and left the claim, and an opened view stored without it showed on the feed
        (which renders the envelope in hand) and was missing from history (SPEC §27.7). A
        message recalled and purged here keeps none: a later copy is never stored (SPEC §31.1).
        A message that opened waits for no key: its held note goes, whichever path opened it (a
        room key opens at most 1,000 held ones in its batch, node/e2ee/room_opener.py; the rest
        open as copies of them come again, and stayed noted as held, asked for by key requests)."""

        def keep_txn(txn: KvTxn) -> MessageId | None:
            seen = crypto.claim_index_txn(txn, session_id, index, message_id)
            # (a copy that came again and finds its plaintext writes nothing: no commit of its own)
            lost = seen == message_id and crypto.plaintext_txn(txn, message_id) is None
            if (seen is None or lost) and txn.get(Table.MESSAGE_IDS, message_id) != WITHDRAWN_SLOT:
                crypto.put_plaintext_txn(txn, message_id, plaintext)
            if seen is None or seen == message_id:  # (a delete of no note stages nothing)
                crypto.unhold_txn(txn, session_id, message_id)
            return seen

        return self._engine.write(keep_txn)

    def hand_out_one_time_key(self, key: bytes) -> bool:
        """Mark one of our one-time keys handed out; False if it already was."""
        return self._engine.write(lambda txn: crypto.hand_out_txn(txn, key))

    def forget_handed_out(self, keep: frozenset[bytes]) -> int:
        """Forget the handed-out marks of keys outside `keep`."""
        return self._engine.write(lambda txn: crypto.forget_handed_out_txn(txn, keep))

    def put_plaintexts(self, plaintexts: Sequence[tuple[MessageId, bytes]]) -> None:
        """Keep what encrypted events opened to."""

        def put_txn(txn: KvTxn) -> None:
            for message_id, plaintext in plaintexts:
                crypto.put_plaintext_txn(txn, message_id, plaintext)

        self._engine.write(put_txn)

    def forget_plaintext(self, message_id: bytes) -> None:
        """Drop what an event opened to (it was refused after opening)."""
        self._engine.write(lambda txn: crypto.forget_plaintext_txn(txn, message_id))

    def plaintext(self, message_id: bytes) -> bytes | None:
        """What an encrypted event opened to here, if it did."""
        with self._engine.read() as txn:
            return crypto.plaintext_txn(txn, message_id)

    def hold_encrypted(self, session_id: bytes, message_id: MessageId, room: RoomId) -> None:
        """Note a stored event waiting for its room key."""
        self._engine.write(lambda txn: crypto.hold_txn(txn, session_id, message_id, room))
        self._holds += 1  # after the write: in a batch, before the batch commits (HeldWatch)

    @property
    def holds(self) -> int:
        """`hold_encrypted` calls whose write returned since this store opened."""
        return self._holds

    def held_encrypted(self, session_id: bytes, limit: int) -> list[tuple[MessageId, RoomId]]:
        """Events waiting for the key of `session_id`."""
        with self._engine.read() as txn:
            return crypto.held_txn(txn, session_id, limit)

    def held_sessions(self, limit: int) -> list[tuple[RoomId, bytes]]:
        """Sessions some stored event waits for."""
        with self._engine.read() as txn:
            return crypto.held_sessions_txn(txn, limit)

    def unhold_encrypted(self, session_id: bytes, message_id: MessageId) -> None:
        """An event waits for its key no more."""
        self._engine.write(lambda txn: crypto.unhold_txn(txn, session_id, message_id))

    def mark_shared(
        self,
        room: RoomId,
        session_id: bytes,
        devices: Mapping[DeviceId, UserId],
        first_index: int = 0,
    ) -> None:
        """Note the devices our outbound session's key went to, at `first_index`."""
        self._engine.write(
            lambda txn: crypto.mark_shared_txn(txn, room, session_id, devices, first_index)
        )

    def mark_owed(
        self, room: RoomId, session_id: bytes, users: Iterable[UserId], first_index: int
    ) -> None:
        """Note members our outbound session encrypted for before we knew their devices."""
        self._engine.write(
            lambda txn: crypto.mark_owed_txn(txn, room, session_id, users, first_index)
        )

    def owed_users(self, room: RoomId, session_id: bytes) -> dict[UserId, int]:
        """The members our outbound session is owed to, with the first index of each."""
        with self._engine.read() as txn:
            return crypto.owed_users_txn(txn, room, session_id)

    def first_index_given(self, room: RoomId, session_id: bytes, user: UserId) -> int | None:
        """The lowest index our outbound session's key went to (or was owed to) `user` at."""
        with self._engine.read() as txn:
            return crypto.first_index_given_txn(txn, room, session_id, user)

    def shared_devices(self, room: RoomId, session_id: bytes) -> dict[DeviceId, UserId]:
        """The devices our outbound session's key went to."""
        with self._engine.read() as txn:
            return crypto.shared_devices_txn(txn, room, session_id)

    # --- sync state, settings ------------------------------------------------------------

    def get_sync_state(self, peer: bytes, room: bytes) -> bytes | None:
        """The stored sync state of (peer, room)."""
        with self._engine.read() as txn:
            return txn.get(Table.SYNC, directory.sync_state_key(peer, room))

    def set_sync_state(self, peer: bytes, room: bytes, state: bytes) -> None:
        """Replace the sync state of (peer, room)."""
        key = directory.sync_state_key(peer, room)
        self._engine.write(lambda txn: txn.put(Table.SYNC, key, state))

    def release_progress(self, room: bytes, device: bytes) -> int | None:
        """The next sequence number of `device` in `room` to release; None if none saved."""
        with self._engine.read() as txn:
            key = directory.release_progress_key(room, device)
            stored = txn.get(Table.SYNC, key)
        return None if stored is None else decode_u64_at(Table.SYNC, key, stored)

    def set_release_progress(self, room: bytes, device: bytes, next_seq: int) -> None:
        """Save how far `device`'s envelopes in `room` were released."""
        key, value = directory.release_progress_key(room, device), pack_u64(next_seq)
        self._engine.write(lambda txn: txn.put(Table.SYNC, key, value))

    def get_setting(self, name: str) -> bytes | None:
        """A stored setting."""
        with self._engine.read() as txn:
            return txn.get(Table.SETTINGS, directory.setting_key(name))

    def set_setting(self, name: str, value: bytes) -> None:
        """Store a setting."""
        key = directory.setting_key(name)
        self._engine.write(lambda txn: txn.put(Table.SETTINGS, key, value))

    def delete_setting(self, name: str) -> bool:
        """Forget a setting; False if there was none."""
        key = directory.setting_key(name)
        return self._engine.write(lambda txn: txn.delete(Table.SETTINGS, key))

    # --- media ---------------------------------------------------------------------------

    def put_media(
        self,
        data: bytes,
        *,
        content_type: str,
        now_ms: int,
        seal: MediaSeal | None = None,
        over_damaged: bool = False,
    ) -> MediaInfo:
        """Write the blob file first, then commit its metadata (idempotent)."""
        digest = hashlib.sha256(data).digest()
        if over_damaged:
            self._blobs.write_over_damaged(digest, data)
        else:
            self._blobs.write(digest, data)
        info = MediaInfo(
            digest=digest, size=len(data), content_type=content_type, created_ms=now_ms, seal=seal
        )
        return self._engine.write(lambda txn: directory.put_media_txn(txn, info))

    def media_info(self, digest: bytes) -> MediaInfo | None:
        """Metadata of a stored blob."""
        with self._engine.read() as txn:
            return directory.media_info_txn(txn, digest)

    def read_media(self, digest: bytes) -> bytes | None:
        """A stored blob's content, verified against its digest."""
        if self.media_info(digest) is None:
            return None
        data = self._blobs.read(digest)
        if data is None:
            where = f"media/{digest.hex()}"
            message = f"{where} has metadata but no blob in {self.where}"
            raise DamagedBlob(message, item=where, digest=digest)
        return data

    def delete_media(self, digest: bytes) -> bool:
        """Drop the metadata (one transaction), then the file."""
        existed = self._engine.write(lambda txn: txn.delete(Table.MEDIA, digest))
        self._blobs.delete(digest)
        return existed

    def media_references(self, digest: bytes) -> list[MediaReference]:
        """Rooms whose stored events reference `digest`."""
        with self._engine.read() as txn:
            return media_refs.media_references_txn(txn, digest)

    # --- maintenance ---------------------------------------------------------------------

    def purge(
        self, *, now_ms: int, retention_ms: int | None = None, limit: int = 10_000
    ) -> PurgeReport:
        """Remove old events (never those the outbox still needs) and expired relay entries."""
        if limit < 1:
            raise LocalProtocolError(f"purge limit must be >= 1, got {limit}")

        def purge_txn(txn: KvTxn) -> PurgeReport:
            keep_ms = retention_ms if retention_ms is not None else _retention_txn(txn)
            # Before the epoch plus the retention nothing is old enough (and u64 keys are >= 0).
            cutoff_ms = max(0, now_ms - keep_ms)
            events, kept = history.purge_events_txn(
                txn, cutoff_ms, limit, on_removed=media_refs.forget_media_txn
            )
            events += actions.purge_withdrawn_txn(txn, limit)
            arrivals.trim_arrivals_txn(txn, limit)
            dropped = relay.purge_relay_txn(txn, now_ms, limit)
            return PurgeReport(events=events, relay_entries=dropped, kept_for_outbox=kept)

        return self._engine.write(purge_txn)

    # --- transactions ----------------------------------------------------------------------

    def run_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        """The calls in one write transaction, each undone alone if it raises; one commit."""
        return self._engine.write_batch(calls)

    def stage_batch(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[Outcome], StagedWrites | None]:
        """`run_batch` with the commit left to `commit_staged` where the engine can."""
        return self._engine.stage_batch(calls)

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        """Commit what `stage_batch` staged, oldest first, in one durable transaction."""
        self._engine.commit_staged(batches)

    def snapshot(self, fn: Callable[[], T]) -> T:
        """`fn`'s reads in one snapshot; a write in it raises `LocalProtocolError`."""
        return self._engine.snapshot(fn)

    @property
    def concurrent_reads(self) -> bool:
        """True if a snapshot may run on another thread while a batch commits."""
        return self._engine.concurrent_reads

    def close(self) -> None:
        """Release the engine; idempotent."""
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _retention_txn(txn: KvTxn) -> int:
    key = directory.setting_key(RETENTION_SETTING)
    value = txn.get(Table.SETTINGS, key)
    if value is None:
        return RETENTION_MS
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise UnreadableItem(
            f"setting {RETENTION_SETTING} is not a decimal number of ms: {value!r}",
            item=f"settings/{RETENTION_SETTING}",
        ) from None


def _conforms(store: KvStore) -> Store:
    """Never called: makes mypy prove that `KvStore` satisfies the `api.Store` protocol."""
    return store
