"""What node/ imports from storage: typed Protocols and the frozen values they return.

Both implementations (`LmdbStore`, `MemoryStore`) satisfy `Store`; node/ depends on the narrow
protocols below and never on an implementation. Every public method is one transaction with all
its indexes (ARCHITECTURE §10). Time is always passed in as `now_ms`; storage never reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Final, NewType, Protocol, TypeVar

from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.media_seal import MediaSeal

if TYPE_CHECKING:
    from .staged import StagedWrites

__all__ = [
    "DEFAULT_RELAY_QUOTA",
    "MAX_SENDER_RANGE",
    "NODE_KEY_SETTING",
    "RETENTION_MS",
    "RETENTION_SETTING",
    "AppendRequest",
    "AppendResult",
    "ClientCredentials",
    "ClientRecord",
    "Contact",
    "ConversationPage",
    "ConversationSummary",
    "CryptoStore",
    "Cursor",
    "DeliveryStatus",
    "DeviceRecord",
    "Direction",
    "FeedEntry",
    "FeedPage",
    "FriendRequest",
    "HistoryPage",
    "HistoryStore",
    "InboundSession",
    "Maintenance",
    "MediaInfo",
    "MediaReference",
    "MediaStore",
    "Member",
    "OnStored",
    "OutboundSession",
    "Outbox",
    "OutboxEntry",
    "Outcome",
    "Profile",
    "PurgeReport",
    "PushSubscription",
    "RelayEntry",
    "RelayInbox",
    "RelayQuota",
    "RelayUsage",
    "RoomDirectory",
    "Settings",
    "StatusRecord",
    "Store",
    "StoredEvent",
    "SyncStateStore",
    "Transactions",
    "Trust",
    "UserDirectory",
]

T = TypeVar("T")

MAX_SENDER_RANGE: Final = 256
"""Most sequence numbers one `sender_events` call covers."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call of a write batch came to: its value, or the exception it raised."""

    value: object = None
    error: Exception | None = None


RETENTION_MS: Final = 30 * 24 * 3600 * 1000
"""Default history retention: 30 days, as the seed keeps (ARCHITECTURE §10)."""
RETENTION_SETTING: Final = "retention.ms"
"""Setting (decimal text) that overrides RETENTION_MS for `purge`."""
NODE_KEY_SETTING: Final = "node.key"
"""Setting holding the node's persisted libp2p identity seed."""

Cursor = NewType("Cursor", bytes)
"""Opaque position in a room's history; only ever obtained from a `HistoryPage`."""


class AppendResult(Enum):
    """What an append did."""

    STORED = "stored"
    """Newly stored, with its indexes and outbox entries."""
    DUPLICATE = "duplicate"
    """This message id was already stored; nothing changed."""
    CONFLICT = "conflict"
    """Another event holds the same (room, hlc, sender device, seq) slot; nothing changed."""


class Direction(Enum):
    """Which way a history page walks."""

    BACKWARD = "backward"
    """Towards older events; without a cursor, start at the newest."""
    FORWARD = "forward"
    """Towards newer events; without a cursor, start at the oldest."""


class DeliveryStatus(IntEnum):
    """Per-recipient status of a message; it only moves forward. Values are never renumbered."""

    SENT = 1
    DELIVERED = 2
    READ = 3


class Trust(IntEnum):
    """What our user settled about a (user, device key) by SAS (SPEC §29.4). Never renumbered."""

    VERIFIED = 1
    """Both sides confirmed the same string and the MACs verified."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest:
    """One event to append, with the home nodes it must be delivered to."""

    envelope: Envelope
    """Already verified (or made) by this node."""
    outbox_to: tuple[bytes, ...] = ()
    """Destination peer / home-node ids that get an outbox entry in the same transaction."""
    next_attempt_ms: int = 0
    """When those outbox entries are first due."""
    absent_to: tuple[bytes, ...] = ()
    """Users whose homes no record names: a sequenced event extends their markers instead of
    taking an entry each (SPEC §11.5.2, `storage.absent`); an unsequenced one takes an entry."""
    acts_on: bytes | None = None
    """The message an EDIT, RECALL or REACTION names, as its writer read it: indexed with
    the event (SPEC §31.5)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event read back from history."""

    envelope: Envelope
    cursor: Cursor
    """Position of this event, usable as a page cursor."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEntry:
    """A stored event with its arrival number (the order this store took it in)."""

    number: int
    event: StoredEvent


OnStored = Callable[[list[FeedEntry]], None]
"""Told the arrival-log entries a write made, once its commit is durable (a client feed takes
them without reading the log back)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPage:
    """A page of the arrival log (`HistoryStore.arrivals_after`)."""

    entries: tuple[FeedEntry, ...]
    """In number order; events purged since they arrived are left out."""
    position: int
    """The highest number this page looked at: ask again from here."""
    last: int
    """The newest arrival number in the store when the page was read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPage:
    """A page of one room's history, always in history order (oldest first)."""

    events: tuple[StoredEvent, ...]
    next: Cursor | None
    """Continue in the same direction from here; None when nothing is left that way."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRecord:
    """Delivery status of one message for one recipient."""

    recipient: bytes
    status: DeliveryStatus
    updated_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """One pending delivery of a stored message to one destination."""

    destination: bytes
    message_id: MessageId
    next_attempt_ms: int
    attempts: int
    """Times it was handed out by `take_due`."""
    last_error: str | None
    wire: bytes
    """The envelope to send."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayQuota:
    """Store-and-forward bounds (SPEC §11.5.3): what the relay inbox holds at most.

    An envelope is *known* when its sender or recipient is one of the node's users, a contact
    or a co-member of a room (the node decides); any other is a *stranger's*. A put past a
    bound of its own recipient, sender user or sending peer is refused; one past a pool's cap
    may evict the oldest entries of that pool's largest holder, never those of a holder no
    larger than the newcomer, and a stranger's envelope never evicts a known one.
    """

    max_count: int
    """Envelopes held for one recipient user (default 10,000)."""
    max_bytes: int
    """Bytes held for one recipient user (default 64 MiB)."""
    sender_count: int = 5_000
    """Envelopes held from one sender user, over all recipients (default 5,000)."""
    sender_bytes: int = 64 * 1024 * 1024
    """Bytes held from one sender user (default 64 MiB)."""
    peer_count: int = 10_000
    """Envelopes held from one sending peer (default 10,000)."""
    peer_bytes: int = 128 * 1024 * 1024
    """Bytes held from one sending peer (default 128 MiB)."""
    stranger_peer_count: int = 100
    """Strangers' envelopes held from one sending peer (default 100)."""
    stranger_peer_bytes: int = 4 * 1024 * 1024
    """Bytes of strangers' envelopes held from one sending peer (default 4 MiB)."""
    stranger_count: int = 2_000
    """Strangers' envelopes held in all (default 2,000)."""
    stranger_bytes: int = 32 * 1024 * 1024
    """Bytes of strangers' envelopes held in all (default 32 MiB)."""
    total_count: int = 50_000
    """Envelopes held in all (default 50,000)."""
    total_bytes: int = 256 * 1024 * 1024
    """Bytes held in all (default 256 MiB)."""


DEFAULT_RELAY_QUOTA: Final = RelayQuota(max_count=10_000, max_bytes=64 * 1024 * 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayUsage:
    """What one recipient currently holds in the relay inbox."""

    count: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayEntry:
    """An envelope held for another user's home node."""

    recipient: UserId
    message_id: MessageId
    wire: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A room member (the seed's ConversationUser row)."""

    room: RoomId
    user: UserId
    role: int
    """Role number as protocol/ defines it; storage does not interpret it."""
    joined_ms: int
    local: bool
    """Hosted on this node: has a conversation list that appends keep current."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationSummary:
    """One entry of a user's conversation list."""

    room: RoomId
    latest_activity: Timestamp
    latest: StoredEvent | None
    """The room's newest stored event; None before the first one (or after purge)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationPage:
    """A page of a user's conversations, latest activity first."""

    items: tuple[ConversationSummary, ...]
    page_number: int
    """1-based, as requested."""
    page_size: int
    has_more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A user's profile (the seed's User row): signed profile data, not identity (ARCHITECTURE
    §9)."""

    user: UserId
    handle: str
    display_name: str
    avatar: bytes | None
    """sha-256 of the profile picture in the media store."""
    bio: str
    updated_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """`contact` is in `owner`'s contact list."""

    owner: UserId
    contact: UserId
    added_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FriendRequest:
    """A pending friend request."""

    sender: UserId
    recipient: UserId
    created_ms: int
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """A device of a user with its certificate and E2EE identity key."""

    user: UserId
    device: DeviceId
    certificate: bytes
    """`protocol.identity.encode_certificate` bytes."""
    e2ee_identity_key: bytes
    """The device's Olm Curve25519 identity key."""
    added_ms: int
    revoked_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PushSubscription:
    """A push endpoint of a user; `data` is opaque to storage (node/ encodes it)."""

    user: UserId
    subscription_id: bytes
    data: bytes
    created_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRecord:
    """A client paired with the API (a browser), which holds a secret whose hash is kept."""

    client_id: bytes
    """16 random bytes, named in the client's session cookie."""
    secret_sha256: bytes
    """sha-256 of the client's secret; the secret itself is never stored."""
    name: str
    """What the user calls it (from the browser's user agent, or given)."""
    created_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaInfo:
    """Metadata of a content-addressed blob."""

    digest: bytes
    """sha-256 of the content: its address."""
    size: int
    content_type: str
    created_ms: int
    seal: MediaSeal | None = None
    """What opens the content, when it is a sealed blob (SPEC §28); None for a plain one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaReference:
    """A room whose stored events reference a blob, by whom, at what declared size."""

    room: RoomId
    sender: UserId
    size: int
    """Bytes of the blob (the ciphertext's when sealed)."""
    content_type: str
    seal: MediaSeal | None = None
    """What opens the blob, as the referencing message carries it (SPEC §28.2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeReport:
    """What one `purge` call removed; call again while anything was removed."""

    events: int
    relay_entries: int
    kept_for_outbox: int
    """Expired events kept because an outbox entry still needs them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundSession:
    """Our Megolm outbound session in one room (SPEC §27.8, §27.9)."""

    created_ms: int
    messages: int
    """Messages encrypted with it so far: rotation after `megolm_rotate_messages`."""
    pickle: bytes
    """vodozemac's pickle, encrypted under the node's pickle key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundSession:
    """A Megolm inbound session and the device whose room key gave it (SPEC §27.7)."""

    owner: DeviceId
    pickle: bytes


class HistoryStore(Protocol):
    """Room history, the message index and per-recipient status."""

    def append(self, request: AppendRequest) -> AppendResult:
        """Store one event and enqueue its outbox entries in one transaction."""
        ...

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Store many events in ONE transaction (group commit); results in request order."""
        ...

    def append_entries(
        self, requests: Sequence[AppendRequest]
    ) -> list[tuple[AppendResult, FeedEntry | None]]:
        """`append_many`, with each stored event's arrival-log entry as that transaction
        numbered it (None where nothing was stored): an event told to clients from the
        envelope in hand, not read back."""
        ...

    def actions_of(self, target: bytes) -> list[StoredEvent]:
        """The stored edits, recalls and reactions that name `target` (SPEC §31.5)."""
        ...

    def index_action(self, target: bytes, action: bytes) -> None:
        """Note that the stored action `action` names `target`: one stored before it could be
        read (it opened when its room key came, SPEC §27.11)."""
        ...

    def index_media(self, envelopes: Sequence[Envelope]) -> None:
        """Note the blobs these stored envelopes reference: ones stored before they could be
        read (they opened when their room key came, SPEC §27.11), as an append notes them."""
        ...

    def withdraw(self, target: bytes, recall: bytes, sender: bytes) -> bool:
        """Record `sender`'s recall of `target`; purge its body once nothing here needs it
        (SPEC §31.1). True if the body was removed now."""
        ...

    def withdrawn_by(self, target: bytes) -> UserId | None:
        """Who recalled `target` here, if anyone did."""
        ...

    def hide_message(self, user: bytes, message: bytes) -> bool:
        """Hide `message` from `user`'s views (delete for me, SPEC §31.7)."""
        ...

    def hidden_messages(self, user: bytes, messages: Sequence[bytes]) -> set[MessageId]:
        """Which of `messages` `user` hid."""
        ...

    def get_event(self, message_id: bytes) -> StoredEvent | None:
        """The stored event with this id, if any."""
        ...

    def get_events(
        self, message_ids: Iterable[bytes], *, in_hand: Mapping[bytes, Envelope] | None = None
    ) -> dict[MessageId, StoredEvent]:
        """The stored events of these ids that the store holds (the others are left out).

        `in_hand`: envelopes the caller holds already, by message id; an event whose stored
        bytes are one of them gets that envelope instead of a decode of its bytes (whether it
        is held is still read: one recalled or purged is left out all the same).
        """
        ...

    def page_history(
        self, room: bytes, *, direction: Direction, cursor: Cursor | None = None, limit: int = 50
    ) -> HistoryPage:
        """Up to `limit` events of `room` beyond `cursor` (exclusive) in `direction`."""
        ...

    def set_status(
        self, message_id: bytes, recipient: bytes, status: DeliveryStatus, *, now_ms: int
    ) -> bool:
        """Raise a recipient's status; False if it was already at or past `status`."""
        ...

    def set_statuses(
        self, updates: Sequence[tuple[bytes, bytes, DeliveryStatus]], *, now_ms: int
    ) -> list[bool]:
        """`set_status` for many (message id, recipient, status) in one transaction."""
        ...

    def last_seq(self, room: bytes, sender_device: bytes) -> int:
        """The highest sequence number of `sender_device` stored in `room`, 0 if none."""
        ...

    def sender_events(
        self, room: bytes, sender_device: bytes, first_seq: int, last_seq: int
    ) -> list[StoredEvent]:
        """Events of `sender_device` in `room` numbered `first_seq..last_seq` (at most 256
        numbers), in sequence order; numbers not stored are skipped (SPEC §26)."""
        ...

    def last_arrival(self) -> int:
        """The newest arrival number (each stored event gets the next one), 0 if none."""
        ...

    def renumber_arrivals(self, message_ids: Sequence[bytes]) -> int:
        """Give these stored events the next arrival numbers, in order, in place of their own
        (if among the newest 10,000): one that became readable late is told as new (SPEC
        §27.13.5). Returns how many moved."""
        ...

    def arrivals_after(
        self, after: int, *, limit: int, in_hand: Mapping[bytes, Envelope] | None = None
    ) -> FeedPage:
        """Up to `limit` arrival-log entries numbered above `after`, in number order.

        `in_hand`: envelopes the caller holds already, by message id; an entry whose stored
        bytes are one of them gets that envelope instead of a decode of its bytes.
        """
        ...

    def statuses(self, message_id: bytes) -> list[StatusRecord]:
        """Every recipient's status of one message, by recipient."""
        ...


class Outbox(Protocol):
    """Pending deliveries, due in time order."""

    def enqueue(self, destination: bytes, message_id: bytes, *, next_attempt_ms: int) -> bool:
        """Add a delivery of a stored message; False if already pending."""
        ...

    def enqueue_many(self, destination: bytes, plan: Sequence[tuple[bytes, int]]) -> int:
        """`enqueue` (message id, first attempt) pairs in one transaction; how many were new."""
        ...

    def take_due(self, *, now_ms: int, limit: int, lease_ms: int) -> list[OutboxEntry]:
        """Hand out due entries (oldest first), counting an attempt and leasing them.

        Each returned entry is rescheduled to `now_ms + lease_ms` in the same transaction, so
        an entry that is neither acked nor rescheduled (a crash) comes due again by itself.
        """
        ...

    def next_due_ms(self) -> int | None:
        """When the earliest queued entry comes due, leased ones included (parked ones are
        not queued); None if none is queued. The pump sleeps until then rather than polling."""
        ...

    def ack(self, destination: bytes, message_id: bytes) -> bool:
        """The destination stored it: remove the entry. False if there was none."""
        ...

    def reschedule(
        self, destination: bytes, message_id: bytes, *, next_attempt_ms: int, error: str | None
    ) -> bool:
        """Move an entry to `next_attempt_ms` (the caller's backoff) with its last error."""
        ...

    def ack_many(self, destination: bytes, message_ids: Sequence[bytes]) -> int:
        """`ack` for many entries in one transaction; returns how many were pending."""
        ...

    def reschedule_many(
        self, destination: bytes, plan: Sequence[tuple[bytes, int]], *, error: str | None
    ) -> int:
        """`reschedule` (message id, next attempt) pairs in one transaction."""
        ...

    def park_many(self, destination: bytes, message_ids: Sequence[bytes]) -> int:
        """Take a down destination's entries out of the due queue, in order (SPEC §11.5.2);
        ack and reschedule still find them. Returns how many were parked."""
        ...

    def unpark(self, destination: bytes, *, now_ms: int, limit: int) -> int:
        """Turn the destination's markers into parked entries in history order (SPEC §11.5.2),
        then put up to `limit` parked entries, oldest first, back in the queue, due now."""
        ...

    def parked_destinations(self) -> list[bytes]:
        """Destinations with parked entries or markers (after a restart: who to try again)."""
        ...

    def absent_markers(self, destination: bytes) -> list[tuple[bytes, bytes, int, int]]:
        """(room, sender device, first seq, last seq) of each marker owed to `destination`."""
        ...


class RelayInbox(Protocol):
    """Store-and-forward of other users' envelopes, within quotas."""

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
        """Hold an envelope that `peer` sent; False if already held (SPEC §11.5.3).

        `known`: its sender or recipient is one of ours, a contact or a co-member. Expired
        entries count for nothing: they are dropped before the bounds are checked.

        Raises:
            QuotaExceeded: a bound of the recipient, sender or peer, or a full pool with
                nothing fair to evict; nothing changed.
        """
        ...

    def relay_take(self, recipient: bytes, *, now_ms: int, limit: int) -> list[RelayEntry]:
        """The oldest unexpired envelopes held for `recipient` (they stay until acked)."""
        ...

    def relay_ack(self, recipient: bytes, message_ids: Sequence[bytes]) -> int:
        """Drop delivered envelopes; returns how many were held."""
        ...

    def relay_recipients(self) -> list[UserId]:
        """Recipients that hold relayed envelopes, by user id."""
        ...

    def relay_usage(self, recipient: bytes) -> RelayUsage:
        """Count and bytes held for `recipient`."""
        ...


class RoomDirectory(Protocol):
    """Rooms, members in both directions, and each local user's conversation list."""

    def add_member(self, room: bytes, user: bytes, *, role: int, local: bool, now_ms: int) -> None:
        """Add or update a member; a local member's conversation list gains the room."""
        ...

    def remove_member(self, room: bytes, user: bytes) -> bool:
        """Remove a member from both directions; the conversation stays listed."""
        ...

    def members(self, room: bytes) -> list[Member]:
        """Members of `room`, by user id."""
        ...

    def rooms_of(self, user: bytes) -> list[RoomId]:
        """Rooms `user` is a member of, by room id."""
        ...

    def open_conversation(self, user: bytes, room: bytes, *, now_ms: int) -> None:
        """List `room` for `user` (no-op if listed), with activity `now_ms`."""
        ...

    def conversations(
        self, user: bytes, *, page_size: int, page_number: int = 1
    ) -> ConversationPage:
        """A page of `user`'s conversations, latest activity first (the seed's paging)."""
        ...

    def delete_conversation(self, user: bytes, room: bytes) -> bool:
        """Remove the room from `user`'s list; a later event in the room lists it again."""
        ...


class UserDirectory(Protocol):
    """Users and profiles, contacts and friend requests, devices, push subscriptions."""

    def put_profile(self, profile: Profile) -> None:
        """Store or replace a profile (keeps the handle index in step)."""
        ...

    def get_profile(self, user: bytes) -> Profile | None:
        """The stored profile of `user`."""
        ...

    def find_handle(self, handle: str) -> list[UserId]:
        """Users whose profile carries `handle` (handles are not unique in a mesh)."""
        ...

    def add_contact(self, owner: bytes, contact: bytes, *, now_ms: int) -> None:
        """Put `contact` in `owner`'s list."""
        ...

    def set_trust(self, user: UserId, device: DeviceId, trust: Trust, *, now_ms: int) -> None:
        """Record what verification settled about `user`'s `device` key (SPEC §29.4)."""
        ...

    def trusted_devices(self, user: UserId) -> dict[DeviceId, Trust]:
        """`user`'s device keys with a trust state; one prefix scan."""
        ...

    def trusted_users(self) -> dict[UserId, dict[DeviceId, Trust]]:
        """Every user with a device key of a trust state (those our user verified: as many as
        they chose), with those keys; one scan."""
        ...

    def remove_contact(self, owner: bytes, contact: bytes) -> bool:
        """Take `contact` off `owner`'s list."""
        ...

    def contacts(self, owner: bytes) -> list[Contact]:
        """`owner`'s contacts, by contact id."""
        ...

    def is_contact(self, owner: bytes, contact: bytes) -> bool:
        """Is `contact` on `owner`'s list? One key read."""
        ...

    def put_friend_request(self, request: FriendRequest) -> bool:
        """Record a request; False if one from the same sender is already pending."""
        ...

    def friend_requests_sent(self, sender: bytes) -> list[FriendRequest]:
        """Requests `sender` made that are still pending."""
        ...

    def friend_requests(self, recipient: bytes) -> list[FriendRequest]:
        """Pending requests to `recipient`, by sender id."""
        ...

    def accept_friend_request(self, sender: bytes, recipient: bytes, *, now_ms: int) -> bool:
        """Drop the request and make both users contacts of each other; False if none."""
        ...

    def delete_friend_request(self, sender: bytes, recipient: bytes) -> bool:
        """Decline or withdraw a request."""
        ...

    def put_device(self, record: DeviceRecord) -> None:
        """Store or replace a device of a user."""
        ...

    def devices(self, user: bytes) -> list[DeviceRecord]:
        """A user's devices (revoked ones included), by device id."""
        ...

    def device_owner(self, device: bytes) -> UserId | None:
        """The user a stored device belongs to."""
        ...

    def put_push_subscription(self, subscription: PushSubscription) -> None:
        """Store or replace a push subscription."""
        ...

    def push_subscriptions(self, user: bytes) -> list[PushSubscription]:
        """A user's push subscriptions."""
        ...

    def add_push_subscription(self, subscription: PushSubscription, max_per_user: int) -> bool:
        """Store a new push subscription unless its user has `max_per_user` already; the
        count and the write are one transaction. False: refused, nothing written."""
        ...

    def delete_push_subscription(self, user: bytes, subscription_id: bytes) -> bool:
        """Forget a push subscription."""
        ...


class ClientCredentials(Protocol):
    """Paired clients of the API (SPEC §15.7), bounded by the caller's `max_clients`."""

    def add_client(self, record: ClientRecord, max_clients: int) -> bool:
        """Store a new client unless `max_clients` are paired already; the count and the write
        are one transaction. False: refused, nothing written."""
        ...

    def clients(self) -> list[ClientRecord]:
        """Every paired client, by client id."""
        ...

    def delete_client(self, client_id: bytes) -> bool:
        """Forget a client (revoke); False if there was none."""
        ...


class CryptoStore(Protocol):
    """End-to-end encryption state (SPEC §27.8): pickles only, encrypted by the caller."""

    def crypto_account(self) -> bytes | None:
        """The Olm account's pickle, if any."""
        ...

    def set_crypto_account(self, pickle: bytes) -> None:
        """Replace the Olm account's pickle."""
        ...

    def olm_sessions(self, peer_curve: bytes) -> list[tuple[bytes, bytes]]:
        """(session id, pickle) of the Olm sessions with a peer's Curve25519 key."""
        ...

    def put_olm_session(self, peer_curve: bytes, session_id: bytes, pickle: bytes) -> None:
        """Store or replace an Olm session."""
        ...

    def outbound_session(self, room: RoomId) -> OutboundSession | None:
        """Our outbound Megolm session in `room`."""
        ...

    def put_outbound_session(self, room: RoomId, session: OutboundSession) -> None:
        """Store our outbound Megolm session in `room` (inside the batch that commits the
        envelope it encrypted, SPEC §27.8)."""
        ...

    def inbound_session(self, room: RoomId, session_id: bytes) -> InboundSession | None:
        """An inbound Megolm session of `room`."""
        ...

    def put_inbound_session(self, room: RoomId, session_id: bytes, session: InboundSession) -> bool:
        """Keep an inbound session unless its id is kept already; True if stored."""
        ...

    def replace_inbound_session(
        self, room: RoomId, session_id: bytes, session: InboundSession
    ) -> None:
        """Keep `session` in place of the one of that id: the same owner's session, known from
        an earlier index (SPEC §27.11.2; the caller checks both)."""
        ...

    def keep_opened(
        self, session_id: bytes, index: int, message_id: MessageId, plaintext: bytes
    ) -> MessageId | None:
        """Record that a Megolm (session, index) opened `message_id` and keep its plaintext,
        CBOR [content type, body] (SPEC §27.7), in one write, and drop its held note if any;
        the message the index opened before, if any (then nothing is written)."""
        ...

    def hand_out_one_time_key(self, key: bytes) -> bool:
        """Mark one of our one-time keys handed out; False if it already was (SPEC §27.2)."""
        ...

    def forget_handed_out(self, keep: frozenset[bytes]) -> int:
        """Forget the handed-out marks of keys outside `keep`; how many were forgotten."""
        ...

    def put_plaintexts(self, plaintexts: Sequence[tuple[MessageId, bytes]]) -> None:
        """Keep what encrypted events opened to, CBOR [content type, body] (SPEC §27.7), in
        one write; history reads show it in place of the ciphertext."""
        ...

    def forget_plaintext(self, message_id: bytes) -> None:
        """Drop what an event opened to: it was refused after opening, so it is not stored."""
        ...

    def plaintext(self, message_id: bytes) -> bytes | None:
        """What an encrypted event opened to here, if it did."""
        ...

    def hold_encrypted(self, session_id: bytes, message_id: MessageId, room: RoomId) -> None:
        """Note a stored event waiting for the room key of `session_id`."""
        ...

    @property
    def holds(self) -> int:
        """`hold_encrypted` calls whose write returned since this store opened (the only
        writer of held notes): while it has not moved, what a read found held still is."""
        ...

    def held_encrypted(self, session_id: bytes, limit: int) -> list[tuple[MessageId, RoomId]]:
        """Up to `limit` events waiting for the key of `session_id`, as (message id, room)."""
        ...

    def held_sessions(self, limit: int) -> list[tuple[RoomId, bytes]]:
        """Up to `limit` sessions some stored event waits for, as (room, session id)."""
        ...

    def unhold_encrypted(self, session_id: bytes, message_id: MessageId) -> None:
        """An event waits for its key no more."""
        ...

    def mark_shared(
        self,
        room: RoomId,
        session_id: bytes,
        devices: Mapping[DeviceId, UserId],
        first_index: int = 0,
    ) -> None:
        """Note the member devices our outbound session's key went to (SPEC §27.9), at message
        index `first_index`."""
        ...

    def mark_owed(
        self, room: RoomId, session_id: bytes, users: Iterable[UserId], first_index: int
    ) -> None:
        """Note members our outbound session encrypted message `first_index` for while we knew
        none of their devices (SPEC §27.10.1); the first index noted stays."""
        ...

    def owed_users(self, room: RoomId, session_id: bytes) -> dict[UserId, int]:
        """The members our outbound session is owed to, with the first index of each."""
        ...

    def first_index_given(self, room: RoomId, session_id: bytes, user: UserId) -> int | None:
        """The lowest message index at which our outbound session's key went to a device of
        `user` or was owed to `user`; None if neither (SPEC §27.13.1)."""
        ...

    def shared_devices(self, room: RoomId, session_id: bytes) -> dict[DeviceId, UserId]:
        """The member devices our outbound session's key went to."""
        ...


class SyncStateStore(Protocol):
    """Per-peer, per-room sync state (an opaque resumable token for ARCHITECTURE §8)."""

    def get_sync_state(self, peer: bytes, room: bytes) -> bytes | None:
        """The stored state, if any."""
        ...

    def set_sync_state(self, peer: bytes, room: bytes, state: bytes) -> None:
        """Replace the stored state."""
        ...

    def release_progress(self, room: bytes, device: bytes) -> int | None:
        """The next sequence number of `device` in `room` to release to the app (SPEC §8);
        None if none was saved."""
        ...

    def set_release_progress(self, room: bytes, device: bytes, next_seq: int) -> None:
        """Save how far `device`'s envelopes in `room` were released."""
        ...


class MediaStore(Protocol):
    """Content-addressed blobs (files beside the environment) and their metadata."""

    def put_media(
        self,
        data: bytes,
        *,
        content_type: str,
        now_ms: int,
        seal: MediaSeal | None = None,
        over_damaged: bool = False,
    ) -> MediaInfo:
        """Store a blob under its sha-256 (idempotent) and return its metadata; `seal` opens a
        sealed blob (SPEC §28). A held copy is kept unread, unless `over_damaged` (the repair
        of a blob held damaged, SPEC §11.8.7): then one that no longer matches is replaced."""
        ...

    def media_info(self, digest: bytes) -> MediaInfo | None:
        """Metadata of a stored blob."""
        ...

    def read_media(self, digest: bytes) -> bytes | None:
        """The blob's content, checked against its digest."""
        ...

    def delete_media(self, digest: bytes) -> bool:
        """Remove a blob and its metadata."""
        ...

    def media_references(self, digest: bytes) -> list[MediaReference]:
        """Rooms (and senders) whose stored events reference `digest`: written with each append,
        removed with each purged event."""
        ...


class Settings(Protocol):
    """Node identity and settings."""

    def get_setting(self, name: str) -> bytes | None:
        """A stored setting."""
        ...

    def set_setting(self, name: str, value: bytes) -> None:
        """Store a setting."""
        ...

    def delete_setting(self, name: str) -> bool:
        """Forget a setting; False if there was none."""
        ...


class Transactions(Protocol):
    """Many calls in one transaction: how `AsyncStore` shares one commit and one snapshot."""

    def run_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        """Run `calls` (each calling methods of this store) in one write transaction.

        One durable commit for all; a call that raises is undone alone and its exception
        is its outcome.
        """
        ...

    def stage_batch(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[Outcome], StagedWrites | None]:
        """`run_batch`'s calls run on this thread, the commit left to `commit_staged` (on the
        writer thread) when the engine can: returns the outcomes and the staged writes, or
        None if the engine committed them itself. An outcome may be acted on only once its
        batch committed. Later stages read over the earlier ones not yet committed."""
        ...

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        """Commit staged batches, oldest first, in one durable transaction.

        Raises:
            StorageError: the commit failed; so will every batch staged after these.
        """
        ...

    def snapshot(self, fn: Callable[[], T]) -> T:
        """Run `fn` (calling read methods of this store) in one read-only snapshot."""
        ...

    @property
    def concurrent_reads(self) -> bool:
        """True if `snapshot` may run on another thread while `run_batch` commits."""
        ...


class Maintenance(Protocol):
    """Retention and lifetime."""

    @property
    def where(self) -> str:
        """The store's path (`:memory:` for the twin), as error messages name it."""
        ...

    def purge(
        self, *, now_ms: int, retention_ms: int | None = None, limit: int = 10_000
    ) -> PurgeReport:
        """Remove up to `limit` events older than the retention and expired relay entries.

        Never removes an outbox entry or an event an outbox entry still needs.
        """
        ...

    def close(self) -> None:
        """Release the store; idempotent."""
        ...


class Store(
    HistoryStore,
    Outbox,
    RelayInbox,
    RoomDirectory,
    UserDirectory,
    ClientCredentials,
    CryptoStore,
    SyncStateStore,
    MediaStore,
    Settings,
    Transactions,
    Maintenance,
    Protocol,
):
    """Everything a node persists."""
