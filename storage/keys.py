"""Every byte layout of the store: sub-database names, keys, and the fixed-width values.

Integers are big-endian and fixed-width, so byte order is numeric order and a prefix scan is a
range scan (CONVENTIONS §5 "Storage"). Ids of users, devices, rooms and messages are 32 bytes;
peer / home-node ids vary in length and carry a one-byte length prefix where something follows
them in a key. Record values (profiles, devices, ...) are encoded in `records.py`.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Final

from hearthmesh.protocol.errors import LocalProtocolError, UnreadableItem
from hearthmesh.protocol.hlc import TIMESTAMP_BYTES
from hearthmesh.protocol.media_seal import KEY_BYTES, NONCE_BYTES, MediaSeal

__all__ = [
    "ID_BYTES",
    "KEY_END",
    "MAX_PEER_ID_BYTES",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "SEQ_BYTES",
    "SLOT_BYTES",
    "WITHDRAWN_SLOT",
    "Table",
    "absent_by_room_key",
    "absent_key",
    "activity_key",
    "blob_name",
    "check_id",
    "contact_key",
    "conversation_key",
    "crypto_pair_key",
    "decode_absent_by_room_key",
    "decode_absent_key",
    "decode_activity_key",
    "decode_outbox_parked_key",
    "decode_outbox_queue_key",
    "decode_relay_expiry_key",
    "decode_relay_size_key",
    "decode_slot",
    "device_key",
    "handle_key",
    "history_key",
    "media_ref_key",
    "member_key",
    "outbox_message_key",
    "outbox_parked_key",
    "outbox_queue_key",
    "pack_seal",
    "pack_u32",
    "pack_u64",
    "peer_prefix",
    "prefix_end",
    "push_key",
    "relay_by_peer_key",
    "relay_expiry_key",
    "relay_holder_key",
    "relay_id_key",
    "relay_message_key",
    "relay_size_key",
    "release_key",
    "sender_seq_key",
    "sequence_key",
    "slot",
    "sync_key",
    "unpack_seal",
    "unpack_u32",
    "unpack_u64",
]

SCHEMA_VERSION: Final = 1
"""Layout version written at creation and checked at every open."""
SCHEMA_KEY: Final = b"version"
"""Key of the schema version (u32) in `Table.SCHEMA`."""

ID_BYTES: Final = 32
SEQ_BYTES: Final = 8
MAX_PEER_ID_BYTES: Final = 255
SLOT_BYTES: Final = TIMESTAMP_BYTES + ID_BYTES + SEQ_BYTES
"""hlc | sender device | seq: where an event lives within its room (the cursor form)."""
WITHDRAWN_SLOT: Final = b""
"""The `history.ids` value of a recalled message purged here: no slot, never stored again."""
KEY_END: Final = b"\xff" * 512
"""Greater than every key we write (LMDB keys are at most 511 bytes)."""

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_U64_MAX: Final = (1 << 64) - 1


class Table(Enum):
    """The named sub-databases; the value is the LMDB name (dotted nouns, CONVENTIONS §3)."""

    # Members are singletons compared by identity, so identity is their hash: Enum's own
    # `__hash__` is a Python call, and each transaction's lookup of a table's handle made one
    # (~22 a delivered message on each home, `bench delivery-cost`).
    __hash__ = object.__hash__

    SCHEMA = b"meta.schema"
    """b"version" -> u32."""
    SETTINGS = b"meta.settings"
    """setting name (utf-8) -> value bytes."""
    HISTORY = b"history.events"
    """room | hlc(12) | sender device | seq u64 -> message id | envelope wire bytes."""
    SEQUENCES = b"history.sequences"
    """room | sender device -> highest seq u64 stored (a sender resumes its numbering here)."""
    SEQUENCE_FLOORS = b"history.sequence_floors"
    """room | sender device -> highest seq u64 a purge or a recall took out of `by_sender`: with
    it, a rebuilt `history.sequences` row never gives a number twice (written only by removals)."""
    BY_SENDER = b"history.by_sender"
    """room | sender device | seq u64 -> hlc(12): a sender's events by number (gap fetching)."""
    MESSAGE_IDS = b"history.ids"
    """message id -> slot (the history key): dedupe and lookup by id; `WITHDRAWN_SLOT` for a
    recalled message whose body was purged here, so a later copy is a duplicate (SPEC §31.1)."""
    STATUS = b"status.receipts"
    """message id | recipient -> status u8 | updated_ms u64."""
    OUTBOX_QUEUE = b"outbox.queue"
    """next_attempt_ms u64 | len u8 | destination | message id -> attempts u32 | error utf-8."""
    OUTBOX_BY_MESSAGE = b"outbox.by_message"
    """message id | len u8 | destination -> next_attempt_ms u64, + b"p" when parked (finds the
    entry's key)."""
    OUTBOX_PARKED = b"outbox.parked"
    """len u8 | destination | queued_ms u64 | message id -> attempts u32 | error utf-8: entries
    of a destination that is down, out of the due queue until it is tried again."""
    OUTBOX_ABSENT = b"outbox.absent"
    """len u8 | destination | room | sender device | first seq u64 -> last seq u64: the
    sequence numbers of our device's events in a room owed to a user whose home no record
    names (SPEC §11.5.2), one marker per run of numbers instead of an entry per event."""
    OUTBOX_ABSENT_BY_ROOM = b"outbox.absent_by_room"
    """room | sender device | first seq u64 | len u8 | destination -> last seq u64: the same
    markers by event (purge keeps what one still needs)."""
    RELAY_MESSAGES = b"relay.messages"
    """recipient | arrival u64 -> expires_ms u64 | message id | envelope wire bytes."""
    RELAY_IDS = b"relay.ids"
    """recipient | message id -> arrival u64 (dedupe)."""
    RELAY_USAGE = b"relay.usage"
    """recipient -> count u64 | bytes u64 | next arrival u64 (quota bookkeeping)."""
    RELAY_EXPIRY = b"relay.expiry"
    """expires_ms u64 | recipient | arrival u64 -> b"" (TTL purge in time order)."""
    RELAY_HOLDERS = b"relay.holders"
    """recipient | arrival u64 -> known u8 | sender user | peer: whose share an entry is
    (SPEC §11.5.3); an entry without one (written before shares existed) counts for nobody."""
    RELAY_SENDERS = b"relay.senders"
    """sender user -> count u64 | bytes u64 held for that sender."""
    RELAY_PEERS = b"relay.peers"
    """known u8 | len u8 | peer -> count u64 | bytes u64 held from that peer, per class."""
    RELAY_TOTALS = b"relay.totals"
    """known u8 -> count u64 | bytes u64 held in that class (strangers 0, known 1)."""
    RELAY_BY_SIZE = b"relay.by_size"
    """known u8 | bytes u64 | len u8 | peer -> b"": the largest holder of a class comes last."""
    RELAY_BY_PEER = b"relay.by_peer"
    """known u8 | len u8 | peer | expires_ms u64 | recipient | arrival u64 -> b"": a holder's
    oldest entry comes first (fair eviction, SPEC §11.5.3)."""
    MEMBERS = b"rooms.members"
    """room | user -> member record (the seed's ConversationUser)."""
    ROOMS_BY_USER = b"rooms.by_user"
    """user | room -> b"" (the seed's UserConversation)."""
    LOCAL_MEMBERS = b"rooms.local_members"
    """room | user -> b"" for users hosted here: whose conversation lists an append bumps."""
    CONVERSATIONS = b"conversations.latest"
    """user | room -> hlc(12) of the latest activity in a listed conversation."""
    ACTIVITY = b"conversations.by_activity"
    """user | hlc(12) | room -> b"": a user's conversations in activity order."""
    PROFILES = b"users.profiles"
    """user -> profile record."""
    HANDLES = b"users.handles"
    """handle (utf-8) | 0x00 | user -> b""."""
    CONTACTS = b"contacts.entries"
    """owner | contact -> added_ms u64."""
    FRIEND_REQUESTS = b"contacts.requests"
    """recipient | sender -> friend request record."""
    DEVICES = b"devices.records"
    """user | device -> device record."""
    DEVICE_OWNERS = b"devices.owners"
    """device -> user."""
    SYNC = b"sync.peers"
    """len u8 | peer | room -> opaque sync state; `release_key` rows: next seq u64."""
    PUSH = b"push.subscriptions"
    """user | subscription id -> subscription record."""
    MEDIA = b"media.blobs"
    """sha-256 of the blob -> media record; the blob is a file beside the environment."""
    MEDIA_REFS = b"media.references"
    """digest | room | sender -> declared size u64 | content type: where a blob is named."""
    ARRIVALS = b"feed.arrivals"
    """arrival u64 -> history key: stored events in the order this store took them (the
    client feed, SPEC §15.4)."""
    FRIEND_REQUESTS_SENT = b"contacts.requests_sent"
    """sender | recipient -> b"": the reverse of `contacts.requests` (outgoing, SPEC §18)."""
    CLIENTS = b"clients.credentials"
    """client id (16 bytes) -> paired client record (web client #17, SPEC §15.7)."""
    E2EE_ACCOUNT = b"e2ee.account"
    """b"account" -> the Olm account's vodozemac pickle (SPEC §27.8)."""
    E2EE_OLM = b"e2ee.olm_sessions"
    """peer curve key(32) | session id (utf-8) -> Olm session pickle."""
    E2EE_OUTBOUND = b"e2ee.outbound"
    """room -> created_ms u64 | messages u32 | Megolm outbound session pickle (SPEC §27.9)."""
    E2EE_INBOUND = b"e2ee.inbound"
    """room | session id(32) -> owner device(32) | Megolm inbound session pickle."""
    E2EE_OPENED = b"e2ee.opened"
    """session id(32) | index u32 -> message id: which message each Megolm index opened
    (replay, SPEC §27.7)."""
    E2EE_HANDED_OUT = b"e2ee.handed_out"
    """one-time key(32) -> b"": keys of ours already handed to a claimer (SPEC §27.2)."""
    E2EE_PLAINTEXT = b"e2ee.plaintext"
    """message id -> CBOR [content type, body]: what an encrypted event opened to here
    (SPEC §27.7); history reads show it in place of the ciphertext."""
    E2EE_HELD = b"e2ee.held"
    """session id(32) | message id -> room: stored events waiting for their room key."""
    E2EE_SHARED = b"e2ee.shared"
    """room | session id(32) | device -> user: the member devices our outbound session's key
    went to (SPEC §27.9: a device gone from the room means a new session)."""
    E2EE_OWED = b"e2ee.owed"
    """room | session id(32) | user -> first index u64: members our outbound session encrypted
    for while we knew none of their devices (SPEC §27.10.1); a key request from such a user is
    answered from that index (SPEC §27.13.1)."""
    TRUST = b"verification.trust"
    """user | device -> trust u8 | updated_ms u64: what SAS verification settled (SPEC §29.4)."""
    ACTIONS = b"history.actions"
    """target message id | action message id -> b"": the edits, recalls and reactions stored
    here that name a message (SPEC §31.5)."""
    WITHDRAWN = b"history.withdrawn"
    """target message id -> recall message id | recalling user: recalled messages, whose body
    is purged here and never stored again (SPEC §31.1)."""
    HIDDEN = b"history.hidden"
    """user | message id -> b"": messages a user deleted for themselves (SPEC §31.7)."""


def crypto_pair_key(first: bytes, second: bytes) -> bytes:
    """A 32-byte id followed by a second id: the e2ee tables' keys (room | session, ...)."""
    check_id(first, "e2ee")
    return first + second


def check_id(value: bytes, what: str) -> None:
    """User, device, room and message ids are 32 bytes.

    Raises:
        LocalProtocolError: `value` (named `what` in the message) has another length.
    """
    if len(value) != ID_BYTES:
        raise LocalProtocolError(f"{what} id must be {ID_BYTES} bytes, got {len(value)}")


def pack_u32(value: int) -> bytes:
    """4 bytes, big-endian."""
    return _U32.pack(value)


def unpack_u32(data: bytes) -> int:
    """Inverse of `pack_u32`."""
    return int(_U32.unpack(data)[0])


def pack_u64(value: int) -> bytes:
    """8 bytes, big-endian.

    Raises:
        LocalProtocolError: `value` (a time or counter from the caller) is outside 0..2^64-1.
    """
    if not 0 <= value <= _U64_MAX:
        raise LocalProtocolError(f"{value} does not fit an unsigned 64-bit field")
    return _U64.pack(value)


def unpack_u64(data: bytes) -> int:
    """Inverse of `pack_u64`."""
    return int(_U64.unpack(data)[0])


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (len(prefix) + 1)  # all-0xff prefix: no finite bound, go past it
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _peer(peer: bytes) -> bytes:
    if not 0 < len(peer) <= MAX_PEER_ID_BYTES:
        raise LocalProtocolError(f"peer id of {len(peer)} bytes (1..{MAX_PEER_ID_BYTES})")
    return bytes([len(peer)]) + peer


def peer_prefix(peer: bytes) -> bytes:
    """The length-prefixed form of a variable-length peer id used inside keys."""
    return _peer(peer)


# --- history ---------------------------------------------------------------------------------


def slot(hlc: bytes, sender_device: bytes, seq: int) -> bytes:
    """hlc(12) | device(32) | seq u64: an event's place within its room, also the cursor form."""
    return hlc + sender_device + _U64.pack(seq)


def sequence_key(room: bytes, sender_device: bytes) -> bytes:
    """room | sender device."""
    return room + sender_device


def sender_seq_key(room: bytes, sender_device: bytes, seq: int) -> bytes:
    """room | sender device | seq u64: a sender's events in one room in sequence order."""
    return room + sender_device + pack_u64(seq)


def history_key(room: bytes, hlc: bytes, sender_device: bytes, seq: int) -> bytes:
    """room | hlc | sender device | seq: sorts in history order (SPEC §4.5) within a room."""
    return room + slot(hlc, sender_device, seq)


def decode_slot(key: bytes) -> tuple[bytes, bytes]:
    """Split a history key into (room, in-room slot)."""
    return key[:ID_BYTES], key[ID_BYTES:]


# --- outbox ----------------------------------------------------------------------------------


def outbox_queue_key(next_attempt_ms: int, destination: bytes, message_id: bytes) -> bytes:
    """next_attempt_ms | len | destination | message id: due entries come first."""
    return pack_u64(next_attempt_ms) + _peer(destination) + message_id


def decode_outbox_queue_key(key: bytes) -> tuple[int, bytes, bytes]:
    """(next_attempt_ms, destination, message id) of an outbox queue key."""
    length = key[8]
    return unpack_u64(key[:8]), key[9 : 9 + length], key[9 + length :]


def outbox_parked_key(destination: bytes, queued_ms: int, message_id: bytes) -> bytes:
    """len | destination | queued_ms | message id: a destination's parked entries in order."""
    return _peer(destination) + pack_u64(queued_ms) + message_id


def decode_outbox_parked_key(key: bytes) -> tuple[bytes, int, bytes]:
    """(destination, queued_ms, message id) of a parked outbox key."""
    end = 1 + key[0]
    return key[1:end], unpack_u64(key[end : end + 8]), key[end + 8 :]


def absent_key(destination: bytes, room: bytes, sender_device: bytes, first_seq: int) -> bytes:
    """len | destination | room | sender device | first seq: a destination's markers in order."""
    return _peer(destination) + room + sender_device + pack_u64(first_seq)


def decode_absent_key(key: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(destination, room, sender device, first seq) of an `outbox.absent` key."""
    size = key[0]
    destination, rest = key[1 : 1 + size], key[1 + size :]
    if len(rest) != 2 * ID_BYTES + SEQ_BYTES:
        raise LocalProtocolError(f"not an outbox.absent key: {key.hex()}")
    return destination, rest[:ID_BYTES], rest[ID_BYTES : 2 * ID_BYTES], unpack_u64(rest[-8:])


def absent_by_room_key(
    room: bytes, sender_device: bytes, first_seq: int, destination: bytes
) -> bytes:
    """room | sender device | first seq | len | destination."""
    return room + sender_device + pack_u64(first_seq) + _peer(destination)


def decode_absent_by_room_key(key: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(destination, room, sender device, first seq) of an `outbox.absent_by_room` key."""
    head = 2 * ID_BYTES + SEQ_BYTES
    if len(key) <= head or len(key) != head + 1 + key[head]:
        raise LocalProtocolError(f"not an outbox.absent_by_room key: {key.hex()}")
    room, device, first_seq = key[:ID_BYTES], key[ID_BYTES : 2 * ID_BYTES], key[2 * ID_BYTES : head]
    return key[head + 1 :], room, device, unpack_u64(first_seq)


def outbox_message_key(message_id: bytes, destination: bytes) -> bytes:
    """message id | len | destination: all pending deliveries of one message share a prefix."""
    return message_id + _peer(destination)


# --- relay -----------------------------------------------------------------------------------


def relay_message_key(recipient: bytes, arrival: int) -> bytes:
    """recipient | arrival u64: a recipient's envelopes in arrival order."""
    return recipient + _U64.pack(arrival)


def relay_id_key(recipient: bytes, message_id: bytes) -> bytes:
    """recipient | message id."""
    return recipient + message_id


def relay_expiry_key(expires_ms: int, recipient: bytes, arrival: int) -> bytes:
    """expires_ms | recipient | arrival: expired entries come first."""
    return pack_u64(expires_ms) + recipient + _U64.pack(arrival)


def decode_relay_expiry_key(key: bytes) -> tuple[int, bytes, int]:
    """(expires_ms, recipient, arrival) of a relay expiry key."""
    return unpack_u64(key[:8]), key[8 : 8 + ID_BYTES], unpack_u64(key[8 + ID_BYTES :])


def relay_holder_key(known: bool, peer: bytes) -> bytes:
    """known u8 | len | peer: one holder (a sending peer) within its class."""
    return bytes([known]) + _peer(peer)


def relay_size_key(known: bool, held_bytes: int, peer: bytes) -> bytes:
    """known u8 | bytes u64 | len | peer: holders of a class by the bytes they hold."""
    return bytes([known]) + pack_u64(held_bytes) + _peer(peer)


def decode_relay_size_key(key: bytes) -> tuple[int, bytes]:
    """(bytes held, peer) of a `relay.by_size` key."""
    return unpack_u64(key[1:9]), key[10:]


def relay_by_peer_key(
    known: bool, peer: bytes, expires_ms: int, recipient: bytes, arrival: int
) -> bytes:
    """known u8 | len | peer | expires_ms | recipient | arrival: a holder's entries by age."""
    return relay_holder_key(known, peer) + relay_expiry_key(expires_ms, recipient, arrival)


# --- rooms and conversations -----------------------------------------------------------------


def member_key(room: bytes, user: bytes) -> bytes:
    """room | user (also user | room for the reverse direction)."""
    return room + user


def conversation_key(user: bytes, room: bytes) -> bytes:
    """user | room."""
    return user + room


def activity_key(user: bytes, hlc: bytes, room: bytes) -> bytes:
    """user | hlc | room: a reverse scan of the user's prefix lists the latest first."""
    return user + hlc + room


def decode_activity_key(key: bytes) -> tuple[bytes, bytes]:
    """(hlc, room) of an activity key."""
    return key[ID_BYTES : ID_BYTES + TIMESTAMP_BYTES], key[ID_BYTES + TIMESTAMP_BYTES :]


# --- directory -------------------------------------------------------------------------------


def handle_key(handle: str, user: bytes) -> bytes:
    """handle | 0x00 | user; a handle never contains NUL (checked by the caller)."""
    return handle.encode("utf-8") + b"\x00" + user


def contact_key(owner: bytes, other: bytes) -> bytes:
    """owner | other (contacts) and recipient | sender (friend requests)."""
    return owner + other


def device_key(user: bytes, device: bytes) -> bytes:
    """user | device."""
    return user + device


def sync_key(peer: bytes, room: bytes) -> bytes:
    """len | peer | room."""
    return _peer(peer) + room


_RELEASE_PEER: Final = b"release:"


def release_key(room: bytes, device: bytes) -> bytes:
    """len | "release:" | device | room, in `Table.SYNC`: how far a sender device's envelopes
    in a room were released to the app (SPEC §8). A pseudo-peer "release:" + device keeps the
    rows apart from real peers' sync state (a peer id never starts with it)."""
    return sync_key(_RELEASE_PEER + device, room)


def push_key(user: bytes, subscription_id: bytes) -> bytes:
    """user | subscription id."""
    return user + subscription_id


def media_ref_key(digest: bytes, room: bytes, sender: bytes, message_id: bytes) -> bytes:
    """digest | room | sender user | message id: a prefix scan on the digest finds every
    reference, and each message's own entry goes when that message does."""
    return digest + room + sender + message_id


def pack_seal(seal: MediaSeal) -> bytes:
    """key(32) | nonce(12) | plaintext sha-256(32): a media seal in an index value (SPEC §28)."""
    return seal.key + seal.nonce + seal.plain_digest


def unpack_seal(data: bytes) -> MediaSeal:
    """The seal `pack_seal` wrote. Raises UnreadableItem for any other length."""
    if len(data) != KEY_BYTES + NONCE_BYTES + 32:
        raise UnreadableItem(f"a stored media seal is 76 bytes, not {len(data)}", item="seal")
    return MediaSeal(
        key=data[:KEY_BYTES],
        nonce=data[KEY_BYTES : KEY_BYTES + NONCE_BYTES],
        plain_digest=data[KEY_BYTES + NONCE_BYTES :],
    )


def blob_name(digest: bytes) -> str:
    """Relative file name of a media blob: `ab/abcdef...` from its sha-256 hex."""
    text = digest.hex()
    return f"{text[:2]}/{text}"
