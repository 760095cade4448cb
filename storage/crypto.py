"""End-to-end encryption state at rest (SPEC §27.8): `_txn` helpers over the `e2ee.*` tables.

The tables own the Olm account, Olm sessions per peer key, our outbound Megolm session per
room (with its age and message count, SPEC §27.9), inbound Megolm sessions with the device
that shared each, which message each Megolm index opened, and which of our one-time keys were
handed out, and the members a session was encrypted for before we knew their devices (owed
its key, SPEC §27.10.1). Every session is a vodozemac pickle, encrypted by the node under a
key kept outside the store: these helpers never see a secret in the clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import UnreadableItem
from hearthmesh.protocol.identity import DeviceId, UserId

from .api import InboundSession, OutboundSession
from .keys import (
    ID_BYTES,
    Table,
    check_id,
    crypto_pair_key,
    pack_u32,
    pack_u64,
    prefix_end,
    unpack_u32,
    unpack_u64,
)
from .kv import KvTxn
from .records import decode_u64_at

__all__ = [
    "account_txn",
    "claim_index_txn",
    "first_index_given_txn",
    "forget_handed_out_txn",
    "forget_plaintext_txn",
    "hand_out_txn",
    "held_sessions_txn",
    "held_txn",
    "hold_txn",
    "inbound_session_txn",
    "mark_owed_txn",
    "mark_shared_txn",
    "olm_sessions_txn",
    "outbound_session_txn",
    "owed_users_txn",
    "plaintext_txn",
    "put_account_txn",
    "put_inbound_session_txn",
    "put_olm_session_txn",
    "put_outbound_session_txn",
    "put_plaintext_txn",
    "replace_inbound_session_txn",
    "shared_devices_txn",
    "unhold_txn",
]

_ACCOUNT_KEY: Final = b"account"
_OUTBOUND_HEAD: Final = 12  # created_ms u64 | messages u32


def account_txn(txn: KvTxn) -> bytes | None:
    """The account pickle, if the device has one yet."""
    return txn.get(Table.E2EE_ACCOUNT, _ACCOUNT_KEY)


def put_account_txn(txn: KvTxn, pickle: bytes) -> None:
    """Replace the account pickle (after generating or handing out keys)."""
    txn.put(Table.E2EE_ACCOUNT, _ACCOUNT_KEY, pickle)


def olm_sessions_txn(txn: KvTxn, peer_curve: bytes) -> list[tuple[bytes, bytes]]:
    """(session id, pickle) of every Olm session with `peer_curve`, by session id."""
    prefix = crypto_pair_key(peer_curve, b"")
    return [
        (key[ID_BYTES:], value)
        for key, value in txn.scan(Table.E2EE_OLM, prefix, prefix_end(prefix))
    ]


def put_olm_session_txn(txn: KvTxn, peer_curve: bytes, session_id: bytes, pickle: bytes) -> None:
    """Store or replace one Olm session with `peer_curve`."""
    txn.put(Table.E2EE_OLM, crypto_pair_key(peer_curve, session_id), pickle)


def outbound_session_txn(txn: KvTxn, room: RoomId) -> OutboundSession | None:
    """Our outbound Megolm session in `room`, if any."""
    check_id(room, "room")
    value = txn.get(Table.E2EE_OUTBOUND, room)
    if value is None:
        return None
    if len(value) <= _OUTBOUND_HEAD:
        where = f"e2ee.outbound/{room.hex()}"
        raise UnreadableItem(f"{where}: the row is truncated", item=where)
    return OutboundSession(
        created_ms=unpack_u64(value[:8]),
        messages=unpack_u32(value[8:_OUTBOUND_HEAD]),
        pickle=value[_OUTBOUND_HEAD:],
    )


def put_outbound_session_txn(txn: KvTxn, room: RoomId, session: OutboundSession) -> None:
    """Store our outbound session in `room`; in the transaction of the envelope it encrypted
    (SPEC §27.8), so a restart never reuses a Megolm index."""
    check_id(room, "room")
    value = pack_u64(session.created_ms) + pack_u32(session.messages) + session.pickle
    txn.put(Table.E2EE_OUTBOUND, room, value)


def inbound_session_txn(txn: KvTxn, room: RoomId, session_id: bytes) -> InboundSession | None:
    """The inbound Megolm session `session_id` of `room`, if a room key gave it to us."""
    check_id(session_id, "session")
    value = txn.get(Table.E2EE_INBOUND, crypto_pair_key(room, session_id))
    if value is None:
        return None
    if len(value) <= ID_BYTES:
        where = f"e2ee.inbound/{session_id.hex()}"
        raise UnreadableItem(f"{where}: the row is truncated", item=where)
    return InboundSession(owner=DeviceId(value[:ID_BYTES]), pickle=value[ID_BYTES:])


def put_inbound_session_txn(
    txn: KvTxn, room: RoomId, session_id: bytes, session: InboundSession
) -> bool:
    """Keep an inbound session unless one of that id is kept already (first share wins: a later
    copy cannot move the owner or the first known index). True if stored."""
    check_id(session_id, "session")
    check_id(session.owner, "device")
    key = crypto_pair_key(room, session_id)
    return txn.insert(Table.E2EE_INBOUND, key, session.owner + session.pickle)


def replace_inbound_session_txn(
    txn: KvTxn, room: RoomId, session_id: bytes, session: InboundSession
) -> None:
    """Keep `session` in place of the one of that id (the caller checked it is the same
    owner's session known from an earlier index, SPEC §27.11.2)."""
    check_id(session_id, "session")
    check_id(session.owner, "device")
    txn.put(Table.E2EE_INBOUND, crypto_pair_key(room, session_id), session.owner + session.pickle)


def claim_index_txn(
    txn: KvTxn, session_id: bytes, index: int, message_id: MessageId
) -> MessageId | None:
    """Record that Megolm (session, index) opened `message_id`; the message recorded before,
    if any (then nothing is written), for `protocol.e2ee.check_replay`."""
    check_id(message_id, "message")
    key = crypto_pair_key(session_id, pack_u32(index))
    if txn.insert(Table.E2EE_OPENED, key, message_id):
        return None
    seen = txn.get(Table.E2EE_OPENED, key)
    return MessageId(seen) if seen is not None else None


def hand_out_txn(txn: KvTxn, one_time_key: bytes) -> bool:
    """Mark one of our one-time keys as handed out; False if it was already (SPEC §27.2)."""
    check_id(one_time_key, "one-time key")
    return txn.insert(Table.E2EE_HANDED_OUT, one_time_key, b"")


def forget_handed_out_txn(txn: KvTxn, keep: frozenset[bytes]) -> int:
    """Forget handed-out marks of keys not in `keep` (the account's current pool): the account
    no longer holds them, so they cannot be handed out again. Bounds the table. Returns how
    many were forgotten."""
    stale = [key for key, _ in txn.scan(Table.E2EE_HANDED_OUT, b"", b"\xff" * (ID_BYTES + 1))]
    stale = [key for key in stale if key not in keep]
    for key in stale:
        txn.delete(Table.E2EE_HANDED_OUT, key)
    return len(stale)


def put_plaintext_txn(txn: KvTxn, message_id: MessageId, plaintext: bytes) -> None:
    """Keep what an encrypted event opened to: CBOR [content type, body] (SPEC §27.7)."""
    check_id(message_id, "message")
    txn.put(Table.E2EE_PLAINTEXT, message_id, plaintext)


def forget_plaintext_txn(txn: KvTxn, message_id: bytes) -> bool:
    """Drop what `message_id` opened to (its event is refused or recalled); False if none."""
    return txn.delete(Table.E2EE_PLAINTEXT, message_id)


def plaintext_txn(txn: KvTxn, message_id: bytes) -> bytes | None:
    """What the encrypted event `message_id` opened to here, if it did."""
    return txn.get(Table.E2EE_PLAINTEXT, message_id)


def hold_txn(txn: KvTxn, session_id: bytes, message_id: MessageId, room: RoomId) -> None:
    """Note a stored event that waits for the room key of `session_id`."""
    txn.put(Table.E2EE_HELD, crypto_pair_key(session_id, message_id), room)


def held_txn(txn: KvTxn, session_id: bytes, limit: int) -> list[tuple[MessageId, RoomId]]:
    """Up to `limit` events waiting for `session_id`, as (message id, room)."""
    prefix = crypto_pair_key(session_id, b"")
    found: list[tuple[MessageId, RoomId]] = []
    for key, room in txn.scan(Table.E2EE_HELD, prefix, prefix_end(prefix)):
        found.append((MessageId(key[ID_BYTES:]), RoomId(room)))
        if len(found) == limit:
            break
    return found


def held_sessions_txn(txn: KvTxn, limit: int) -> list[tuple[RoomId, bytes]]:
    """Up to `limit` sessions some stored event waits for, as (room, session id)."""
    found: list[tuple[RoomId, bytes]] = []
    start, end = b"", b"\xff" * (2 * ID_BYTES + 1)
    while len(found) < limit:
        first = next(txn.scan(Table.E2EE_HELD, start, end), None)
        if first is None:
            break
        session = first[0][:ID_BYTES]
        found.append((RoomId(first[1]), session))
        start = prefix_end(session)  # one seek per session, however many wait for it
    return found


def unhold_txn(txn: KvTxn, session_id: bytes, message_id: MessageId) -> None:
    """The event opened (or is gone): it waits no more."""
    txn.delete(Table.E2EE_HELD, crypto_pair_key(session_id, message_id))


def mark_shared_txn(
    txn: KvTxn,
    room: RoomId,
    session_id: bytes,
    devices: Mapping[DeviceId, UserId],
    first_index: int = 0,
) -> None:
    """Note that our outbound session `session_id` of `room` went to `devices` (each with its
    user), at message index `first_index`."""
    prefix = crypto_pair_key(room, session_id)
    for device, user in devices.items():
        check_id(user, "user")
        txn.put(Table.E2EE_SHARED, prefix + device, user + pack_u64(first_index))


def shared_devices_txn(txn: KvTxn, room: RoomId, session_id: bytes) -> dict[DeviceId, UserId]:
    """The devices (with their users) our outbound session `session_id` of `room` went to."""
    prefix = crypto_pair_key(room, session_id)
    return {
        DeviceId(key[2 * ID_BYTES :]): UserId(value[:ID_BYTES])
        for key, value in txn.scan(Table.E2EE_SHARED, prefix, prefix_end(prefix))
    }


def mark_owed_txn(
    txn: KvTxn, room: RoomId, session_id: bytes, users: Iterable[UserId], first_index: int
) -> None:
    """Note that our outbound session `session_id` of `room` encrypted message `first_index`
    for `users` while we knew none of their devices (SPEC §27.10.1). The first index noted
    stays: a user is owed what it was sent, from the first message it was sent."""
    prefix = crypto_pair_key(room, session_id)
    for user in users:
        check_id(user, "user")
        txn.insert(Table.E2EE_OWED, prefix + user, pack_u64(first_index))


def first_index_given_txn(txn: KvTxn, room: RoomId, session_id: bytes, user: UserId) -> int | None:
    """The lowest message index at which our outbound session `session_id` of `room` went to
    a device of `user` (0 for a row written before indices were kept) or was owed to `user`
    (SPEC §27.13.1); None if neither."""
    prefix = crypto_pair_key(room, session_id)
    found = [
        decode_u64_at(Table.E2EE_SHARED, key, value[ID_BYTES:]) if len(value) > ID_BYTES else 0
        for key, value in txn.scan(Table.E2EE_SHARED, prefix, prefix_end(prefix))
        if value[:ID_BYTES] == user
    ]
    owed = txn.get(Table.E2EE_OWED, prefix + user)
    if owed is not None:
        found.append(decode_u64_at(Table.E2EE_OWED, prefix + user, owed))
    return min(found, default=None)


def owed_users_txn(txn: KvTxn, room: RoomId, session_id: bytes) -> dict[UserId, int]:
    """The users our outbound session `session_id` of `room` is owed to, each with its first
    owed index."""
    prefix = crypto_pair_key(room, session_id)
    return {
        UserId(key[2 * ID_BYTES :]): decode_u64_at(Table.E2EE_OWED, key, value)
        for key, value in txn.scan(Table.E2EE_OWED, prefix, prefix_end(prefix))
    }
