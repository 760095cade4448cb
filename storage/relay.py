"""The relay inbox: other users' envelopes held for their home nodes, within bounds (`_txn`).

Usage per recipient (count, bytes) is kept in `relay.usage`, and the shares of each sender user,
sending peer and class in `relay_shares`, all in the transaction of the entry they count. A
`relay.usage` row that does not decode is rebuilt from the recipient's entries, which it only
counts (`_usage_txn`, SPEC §11.8.7), and a share from the entries of its holder
(`relay_shares`). A put
past a bound of its own recipient, sender or peer raises `QuotaExceeded` and changes nothing;
one past a pool's cap (strangers', or all) evicts the oldest entries of the pool's largest
holder only when that is fair, else it is refused too (SPEC §11.5.3). Entries expire at
`expires_ms`: they are never handed out, and `purge_relay_txn` drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from hearthmesh.protocol.envelope import Envelope, load_envelope
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    QuotaExceeded,
    UnreadableItem,
)
from hearthmesh.protocol.identity import UserId

from .api import RelayEntry, RelayQuota, RelayUsage
from .directory import setting_key
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
    decode_u64_at,
    encode_relay_message,
    encode_relay_usage,
)
from .relay_shares import (
    Holder,
    check_own_bounds_txn,
    class_share_txn,
    damaged_shares_txn,
    damaged_victims_txn,
    grant_share_txn,
    largest_holder_txn,
    oldest_entry_txn,
    peer_share_txn,
    release_share_txn,
    repair_shares_txn,
    repair_victims_txn,
)

__all__ = [
    "LEGACY_PEER",
    "MAX_EVICTIONS_PER_PUT",
    "RELAY_SHARES_FILLED_SETTING",
    "Holder",
    "damaged_evicted_txn",
    "damaged_shares_txn",
    "fill_relay_shares_txn",
    "purge_relay_txn",
    "relay_ack_txn",
    "relay_expired_txn",
    "relay_put_txn",
    "relay_recipients_txn",
    "relay_take_txn",
    "relay_usage_txn",
    "repair_evicted_txn",
    "repair_shares_txn",
]

log = logging.getLogger(__name__)

MAX_EVICTIONS_PER_PUT: Final = 256
"""Most entries one put may evict to make room; past it the put is refused."""
RELAY_SHARES_FILLED_SETTING: Final = "storage.relay_shares"
"""Set once the entries held before shares existed were counted (`fill_relay_shares_txn`)."""
LEGACY_PEER: Final = b"-"
"""The holder of entries held before shares existed: their peer was not recorded."""


def relay_usage_txn(txn: KvTxn, recipient: bytes) -> RelayUsage:
    """What `recipient` holds now."""
    return _usage_txn(txn, recipient)[0]


def _usage_txn(txn: KvTxn, recipient: bytes, *, repairing: bool = False) -> tuple[RelayUsage, int]:
    """(usage, next arrival) of `recipient`. A damaged row is answered from `relay.messages`:
    the entries held, their wire bytes, and one past the last arrival (a number no entry holds,
    and every index of an entry goes with it). `repairing`: the caller rewrites the row in this
    write transaction, so the repair is logged, once."""
    data = txn.get(Table.RELAY_USAGE, recipient)
    try:
        return decode_relay_usage(recipient, data)
    except UnreadableItem as exc:
        count = size = next_arrival = 0
        for key, value in txn.scan(Table.RELAY_MESSAGES, recipient, prefix_end(recipient)):
            count, size = count + 1, size + len(decode_relay_message(key, value)[2])
            next_arrival = unpack_u64(key[ID_BYTES:]) + 1
        if repairing:
            log.warning("%s: rebuilt from %s", exc, Table.RELAY_MESSAGES.value.decode())
        return RelayUsage(count=count, bytes=size), next_arrival


def _usage_damaged_txn(txn: KvTxn, recipient: bytes) -> bool:
    try:
        decode_relay_usage(recipient, txn.get(Table.RELAY_USAGE, recipient))
    except UnreadableItem:
        return True
    return False


def damaged_evicted_txn(txn: KvTxn, evicted: list[tuple[bytes, int]]) -> bool:
    """Whether a share of the entries a refused put evicted, or their recipient's usage row,
    does not decode: each was recounted in the put's transaction, which the refusal dropped."""
    return damaged_victims_txn(txn, evicted) or any(
        _usage_damaged_txn(txn, recipient) for recipient in {r for r, _ in evicted}
    )


def repair_evicted_txn(txn: KvTxn, evicted: list[tuple[bytes, int]]) -> None:
    """Recount what `damaged_evicted_txn` found, in a write of its own, so the next refused
    put does not recount (a scan) and log it again."""
    repair_victims_txn(txn, evicted)
    for recipient in {r for r, _ in evicted}:
        if _usage_damaged_txn(txn, recipient):
            usage, next_arrival = _usage_txn(txn, recipient, repairing=True)
            txn.put(Table.RELAY_USAGE, recipient, encode_relay_usage(usage, next_arrival))


def relay_put_txn(
    txn: KvTxn,
    recipient: bytes,
    envelope: Envelope,
    *,
    holder: Holder,
    now_ms: int,
    ttl_ms: int,
    quota: RelayQuota,
    evicted: list[tuple[bytes, int]] | None = None,
) -> bool:
    """Hold `envelope` for `recipient` until `now_ms + ttl_ms`; False if already held. Each
    entry evicted to make room is added to `evicted` (recipient, arrival), so a caller whose
    put is refused after evicting can repair what the dropped transaction recounted.

    Raises:
        QuotaExceeded: a bound of the recipient, sender or peer would be passed, or a pool is
            full with nothing fair to evict; the caller's transaction must be dropped (an
            eviction may have run), as `KvEngine.write` does when this raises.
    """
    if len(recipient) != ID_BYTES or ttl_ms <= 0:
        raise LocalProtocolError("relay recipient must be a 32-byte user id and ttl_ms > 0")
    id_key = relay_id_key(recipient, envelope.message_id)
    if txn.get(Table.RELAY_IDS, id_key) is not None:
        return False
    usage = relay_usage_txn(txn, recipient)
    size = len(envelope.wire)
    if usage.count + 1 > quota.max_count or usage.bytes + size > quota.max_bytes:
        raise QuotaExceeded(
            f"relay quota for recipient {recipient.hex()}: holds {usage.count} envelopes / "
            f"{usage.bytes} bytes, limits {quota.max_count} / {quota.max_bytes}, "
            f"refused {size} more bytes"
        )
    check_own_bounds_txn(txn, holder, size, quota)
    evicted = [] if evicted is None else evicted
    if not holder.known:
        pool = quota.stranger_count, quota.stranger_bytes
        _make_room_txn(txn, holder, size, (False,), *pool, evicted)
    _make_room_txn(txn, holder, size, (False, True), quota.total_count, quota.total_bytes, evicted)
    usage, arrival = _usage_txn(txn, recipient, repairing=True)
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
    grant_share_txn(txn, holder, recipient, arrival, expires_ms, size)
    return True


def _pool_txn(txn: KvTxn, classes: tuple[bool, ...]) -> RelayUsage:
    """What the classes of a pool hold together."""
    held = [class_share_txn(txn, known) for known in classes]
    return RelayUsage(count=sum(u.count for u in held), bytes=sum(u.bytes for u in held))


def _make_room_txn(
    txn: KvTxn,
    holder: Holder,
    size: int,
    pool: tuple[bool, ...],
    max_count: int,
    max_bytes: int,
    evicted: list[tuple[bytes, int]],
) -> None:
    """Evict until one more entry of `size` fits the pool of the classes in `pool`, or refuse;
    each victim (recipient, arrival) is added to `evicted`.

    The victim is the oldest entry of the pool's largest holder (by bytes), taken in class
    order (strangers first). Within the newcomer's own class the victim must hold more than the
    newcomer would after the put, on each dimension that is full: so holders converge on equal
    shares, and one that reached its share (or is the largest) is refused instead of evicting.
    """
    # A known envelope outranks every stranger's; a stranger's evicts only strangers' ones.
    victims = (False, True) if holder.known else (False,)
    for _ in range(MAX_EVICTIONS_PER_PUT + 1):
        held = _pool_txn(txn, pool)
        over_count = held.count + 1 > max_count
        over_bytes = held.bytes + size > max_bytes
        if not (over_count or over_bytes):
            return
        victim = _victim_txn(txn, holder, size, victims, over_count, over_bytes)
        if victim is None:
            raise QuotaExceeded(
                f"relay pool full: holds {held.count} envelopes / {held.bytes} bytes, limits "
                f"{max_count} / {max_bytes}, and no larger holder to evict for {size} bytes"
            )
        _, recipient, arrival = victim
        evicted.append((recipient, arrival))
        _remove_txn(txn, recipient, arrival)
    raise QuotaExceeded(f"relay pool: more than {MAX_EVICTIONS_PER_PUT} evictions for one put")


def _victim_txn(
    txn: KvTxn,
    holder: Holder,
    size: int,
    classes: tuple[bool, ...],
    over_count: bool,
    over_bytes: bool,
) -> tuple[int, bytes, int] | None:
    for known in classes:
        largest = largest_holder_txn(txn, known)
        if largest is None:
            continue
        if known == holder.known:
            if largest == holder.peer:
                return None
            theirs = peer_share_txn(txn, known, largest)
            mine = peer_share_txn(txn, known, holder.peer)
            if over_count and theirs.count <= mine.count + 1:
                return None
            if over_bytes and theirs.bytes <= mine.bytes + size:
                return None
        return oldest_entry_txn(txn, known, largest)
    return None


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
    usage, next_arrival = _usage_txn(txn, recipient, repairing=True)  # this entry still counted
    release_share_txn(txn, recipient, arrival, expires_ms, len(wire))  # and in its shares
    txn.delete(Table.RELAY_MESSAGES, key)
    txn.delete(Table.RELAY_IDS, relay_id_key(recipient, message_id))
    txn.delete(Table.RELAY_EXPIRY, relay_expiry_key(expires_ms, recipient, arrival))
    shrunk = RelayUsage(count=usage.count - 1, bytes=usage.bytes - len(wire))
    txn.put(Table.RELAY_USAGE, recipient, encode_relay_usage(shrunk, next_arrival))


def relay_ack_txn(txn: KvTxn, recipient: bytes, message_ids: Sequence[bytes]) -> int:
    """Drop delivered entries; returns how many were held."""
    dropped = 0
    for message_id in message_ids:
        key = relay_id_key(recipient, message_id)
        arrival = txn.get(Table.RELAY_IDS, key)
        if arrival is not None:
            _remove_txn(txn, recipient, decode_u64_at(Table.RELAY_IDS, key, arrival))
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


def fill_relay_shares_txn(txn: KvTxn) -> int:
    """Count entries held before shares existed, once per store: as strangers' envelopes of
    one `LEGACY_PEER`, so they are the first the bounds evict. Returns how many."""
    done = setting_key(RELAY_SHARES_FILLED_SETTING)
    if txn.get(Table.SETTINGS, done) is not None:
        return 0
    legacy = [
        (key, value)
        for key, value in txn.scan(Table.RELAY_MESSAGES, b"", KEY_END)
        if txn.get(Table.RELAY_HOLDERS, key) is None
    ]
    for key, value in legacy:  # after the scan: never mutate under a cursor
        expires_ms, _, wire = decode_relay_message(key, value)
        try:
            sender = bytes(load_envelope(wire).sender_user)
        except HearthError:
            sender = bytes(ID_BYTES)
        holder = Holder(known=False, sender=sender, peer=LEGACY_PEER)
        recipient, arrival = key[:ID_BYTES], unpack_u64(key[ID_BYTES:])
        grant_share_txn(txn, holder, recipient, arrival, expires_ms, len(wire))
    txn.put(Table.SETTINGS, done, b"1")
    return len(legacy)


def relay_expired_txn(txn: KvTxn, now_ms: int) -> bool:
    """Does any entry expire at or before `now_ms`?"""
    return any(True for _ in txn.scan(Table.RELAY_EXPIRY, b"", pack_u64(now_ms + 1)))


def relay_recipients_txn(txn: KvTxn) -> list[UserId]:
    """Recipients that hold at least one relayed envelope, by user id."""
    keys = [key for key, _ in txn.scan(Table.RELAY_USAGE, b"", KEY_END)]
    return [UserId(key) for key in keys if _usage_txn(txn, key)[0].count > 0]
