"""The relay inbox: other users' envelopes held for their home nodes, within quotas (`_txn`).

Usage per recipient (count, bytes) is kept in `relay.usage` and checked before anything is
written, so a put over quota raises `QuotaExceeded` and changes nothing; nothing already held is
evicted to make room. Entries expire at `expires_ms` and are dropped by `purge`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import LocalProtocolError, QuotaExceeded
from hearthmesh.protocol.identity import UserId

from .api import RelayEntry, RelayQuota, RelayUsage
from .keys import (
    ID_BYTES,
    KEY_END,
    Table,
    decode_relay_expiry_key,
    pack_u64,
    prefix_end,
    relay_expiry_key,
    relay_id_key,
    relay_message_key,
    unpack_u64,
)
from .kv import KvTxn
from .records import (
    corrupt,
    decode_relay_message,
    decode_relay_usage,
    encode_relay_message,
    encode_relay_usage,
)

__all__ = [
    "purge_relay_txn",
    "relay_ack_txn",
    "relay_put_txn",
    "relay_recipients_txn",
    "relay_take_txn",
    "relay_usage_txn",
]


def relay_usage_txn(txn: KvTxn, recipient: bytes) -> RelayUsage:
    """What `recipient` holds now."""
    return decode_relay_usage(recipient, txn.get(Table.RELAY_USAGE, recipient))[0]


def relay_put_txn(
    txn: KvTxn,
    recipient: bytes,
    envelope: Envelope,
    *,
    now_ms: int,
    ttl_ms: int,
    quota: RelayQuota,
) -> bool:
    """Hold `envelope` for `recipient` until `now_ms + ttl_ms`; False if already held.

    Raises:
        QuotaExceeded: one more envelope of this size would pass the count or byte quota.
    """
    if len(recipient) != ID_BYTES or ttl_ms <= 0:
        raise LocalProtocolError("relay recipient must be a 32-byte user id and ttl_ms > 0")
    id_key = relay_id_key(recipient, envelope.message_id)
    if txn.get(Table.RELAY_IDS, id_key) is not None:
        return False
    usage, arrival = decode_relay_usage(recipient, txn.get(Table.RELAY_USAGE, recipient))
    size = len(envelope.wire)
    if usage.count + 1 > quota.max_count or usage.bytes + size > quota.max_bytes:
        raise QuotaExceeded(
            f"relay quota for recipient {recipient.hex()}: holds {usage.count} envelopes / "
            f"{usage.bytes} bytes, limits {quota.max_count} / {quota.max_bytes}, "
            f"refused {size} more bytes"
        )
    expires_ms = now_ms + ttl_ms
    txn.put(
        Table.RELAY_MESSAGES,
        relay_message_key(recipient, arrival),
        encode_relay_message(expires_ms, envelope.message_id, envelope.wire),
    )
    txn.put(Table.RELAY_IDS, id_key, pack_u64(arrival))
    txn.put(Table.RELAY_EXPIRY, relay_expiry_key(expires_ms, recipient, arrival), b"")
    grown = RelayUsage(count=usage.count + 1, bytes=usage.bytes + size)
    txn.put(Table.RELAY_USAGE, recipient, encode_relay_usage(grown, arrival + 1))
    return True


def relay_take_txn(txn: KvTxn, recipient: bytes, *, now_ms: int, limit: int) -> list[RelayEntry]:
    """The oldest unexpired entries for `recipient`; they stay until `relay_ack_txn`."""
    if limit < 1:
        raise LocalProtocolError(f"relay take limit must be >= 1, got {limit}")
    entries: list[RelayEntry] = []
    for key, value in txn.scan(Table.RELAY_MESSAGES, recipient, prefix_end(recipient)):
        expires_ms, message_id, wire = decode_relay_message(key, value)
        if expires_ms <= now_ms:
            continue
        entries.append(
            RelayEntry(
                recipient=UserId(recipient),
                message_id=message_id,
                wire=wire,
                expires_ms=expires_ms,
            )
        )
        if len(entries) == limit:
            break
    return entries


def _remove_txn(txn: KvTxn, recipient: bytes, arrival: int) -> None:
    key = relay_message_key(recipient, arrival)
    value = txn.get(Table.RELAY_MESSAGES, key)
    if value is None:
        raise corrupt(Table.RELAY_MESSAGES, key, "indexed relay entry is missing")
    expires_ms, message_id, wire = decode_relay_message(key, value)
    txn.delete(Table.RELAY_MESSAGES, key)
    txn.delete(Table.RELAY_IDS, relay_id_key(recipient, message_id))
    txn.delete(Table.RELAY_EXPIRY, relay_expiry_key(expires_ms, recipient, arrival))
    usage, next_arrival = decode_relay_usage(recipient, txn.get(Table.RELAY_USAGE, recipient))
    shrunk = RelayUsage(count=usage.count - 1, bytes=usage.bytes - len(wire))
    txn.put(Table.RELAY_USAGE, recipient, encode_relay_usage(shrunk, next_arrival))


def relay_ack_txn(txn: KvTxn, recipient: bytes, message_ids: Sequence[bytes]) -> int:
    """Drop delivered entries; returns how many were held."""
    dropped = 0
    for message_id in message_ids:
        arrival = txn.get(Table.RELAY_IDS, relay_id_key(recipient, message_id))
        if arrival is not None:
            _remove_txn(txn, recipient, unpack_u64(arrival))
            dropped += 1
    return dropped


def purge_relay_txn(txn: KvTxn, now_ms: int, limit: int) -> int:
    """Drop up to `limit` entries that expired at or before `now_ms`."""
    expired = []
    for key, _ in txn.scan(Table.RELAY_EXPIRY, b"", pack_u64(now_ms + 1)):
        expired.append(decode_relay_expiry_key(key))
        if len(expired) == limit:
            break
    for _, recipient, arrival in expired:
        _remove_txn(txn, recipient, arrival)
    return len(expired)


def relay_recipients_txn(txn: KvTxn) -> list[UserId]:
    """Recipients that hold at least one relayed envelope, by user id."""
    return [
        UserId(key)
        for key, value in txn.scan(Table.RELAY_USAGE, b"", KEY_END)
        if decode_relay_usage(key, value)[0].count > 0
    ]
