"""Shares of the relay inbox: what each sender user, sending peer and class holds (`_txn`).

A class is *known* (the envelope's sender or recipient has a relationship with this node's
users) or a *stranger's* (SPEC §11.5.3). Every counter here changes in the transaction that
writes or removes the entry it counts, so a bound is checked by reading a few keys, never by
scanning; `relay.by_size` and `relay.by_peer` find the largest holder of a class and its oldest
entry for fair eviction. The counters are derived from the entries they count
(`relay.holders`, sized by `relay.messages`), so one that does not decode is recounted from
them where it is met, rewritten and logged (SPEC §11.8.7), not contained as an unreadable item
that would refuse every envelope of its sender, its peer or, for a class total, everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from hearthmesh.protocol.errors import QuotaExceeded, UnreadableItem

from .api import RelayQuota, RelayUsage
from .keys import (
    ID_BYTES,
    KEY_END,
    Table,
    decode_relay_expiry_key,
    decode_relay_size_key,
    prefix_end,
    relay_by_peer_key,
    relay_holder_key,
    relay_message_key,
    relay_size_key,
)
from .kv import KvTxn
from .records import (
    decode_relay_holder,
    decode_relay_share,
    encode_relay_holder,
    encode_relay_share,
)

__all__ = [
    "Holder",
    "audit_shares_txn",
    "check_own_bounds_txn",
    "class_share_txn",
    "damaged_shares_txn",
    "damaged_victims_txn",
    "grant_share_txn",
    "largest_holder_txn",
    "oldest_entry_txn",
    "peer_share_txn",
    "release_share_txn",
    "repair_shares_txn",
    "repair_victims_txn",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Holder:
    """Whose share a relayed envelope is: its class, sender user and the peer that sent it."""

    known: bool
    sender: bytes
    peer: bytes


def _share_txn(txn: KvTxn, table: Table, key: bytes) -> RelayUsage:
    """A share's counter; one that does not decode is recounted from the held entries (a
    scan, bounded by the total cap) and rewritten: every reader is in a relay write. A refused
    put drops a repair made in its transaction, so a put repairs the shares it checks in a
    write of its own first (`damaged_shares_txn`, `repair_shares_txn`)."""
    try:
        return decode_relay_share(table, key, txn.get(table, key))
    except UnreadableItem as exc:
        usage = RelayUsage(count=0, bytes=0)
        for _, holder, message in _held_txn(txn):
            if message is not None and (table, key) in _share_keys(holder):
                usage = _moved(usage, 1, _wire_bytes(message))
        _set_share_txn(txn, table, key, usage)
        log.warning("%s: rebuilt from %s: %s", exc, Table.RELAY_HOLDERS.value.decode(), usage)
        return usage


def _checked_txn(txn: KvTxn, holder: Holder) -> list[tuple[Table, bytes]]:
    """The shares a put of `holder` checks: its sender's, its peer's in both classes (a peer's
    bound counts both), both class totals (the pools), and the share of each class's largest
    holder, which a put into a full pool reads to pick its victim (refused, the put dropped a
    recount of it, so each refused put recounted it again)."""
    keys = [
        (Table.RELAY_SENDERS, holder.sender),
        (Table.RELAY_PEERS, relay_holder_key(False, holder.peer)),
        (Table.RELAY_PEERS, relay_holder_key(True, holder.peer)),
        (Table.RELAY_TOTALS, bytes([False])),
        (Table.RELAY_TOTALS, bytes([True])),
    ]
    for known in (False, True):
        largest = largest_holder_txn(txn, known)
        if largest is not None and largest != holder.peer:
            keys.append((Table.RELAY_PEERS, relay_holder_key(known, largest)))
    return keys


def damaged_shares_txn(txn: KvTxn, holder: Holder) -> bool:
    """Whether a share a put of `holder` checks does not decode (a read: five gets, and two
    more with the largest holders found in `relay.by_size`)."""
    return any(_damaged(txn, table, key) for table, key in _checked_txn(txn, holder))


def _damaged(txn: KvTxn, table: Table, key: bytes) -> bool:
    try:
        decode_relay_share(table, key, txn.get(table, key))
    except UnreadableItem:
        return True
    return False


def _victims_keys_txn(txn: KvTxn, evicted: list[tuple[bytes, int]]) -> set[tuple[Table, bytes]]:
    """The shares the entries `evicted` (recipient, arrival) are counted in, as they stand."""
    keys: set[tuple[Table, bytes]] = set()
    for recipient, arrival in evicted:
        key = relay_message_key(recipient, arrival)
        value = txn.get(Table.RELAY_HOLDERS, key)
        if value is not None:
            known, sender, peer = decode_relay_holder(key, value)
            keys.update(_share_keys(Holder(known=known, sender=sender, peer=peer)))
    return keys


def damaged_victims_txn(txn: KvTxn, evicted: list[tuple[bytes, int]]) -> bool:
    """Whether a share of the entries a refused put evicted does not decode (a read: a get per
    entry and per share). The pre-check (`_checked_txn`) sees only the largest holders at the
    start; a put that evicts several entries meets the next largest, and each entry's sender."""
    return any(_damaged(txn, table, key) for table, key in _victims_keys_txn(txn, evicted))


def repair_victims_txn(txn: KvTxn, evicted: list[tuple[bytes, int]]) -> None:
    """Recount the damaged shares of the entries a refused put evicted, in a write of their
    own: the refusal dropped the recount made in the put's transaction, so each such put
    recounted (a scan of the pool) and logged again."""
    for table, key in _victims_keys_txn(txn, evicted):
        _share_txn(txn, table, key)


def repair_shares_txn(txn: KvTxn, holder: Holder) -> None:
    """Recount the damaged shares a put of `holder` checks, in a write of their own: made in
    the put's transaction, a repair was dropped with it when the put was refused, and each
    refused put recounted and logged again until one was taken."""
    for table, key in _checked_txn(txn, holder):
        _share_txn(txn, table, key)


def _held_txn(txn: KvTxn) -> Iterator[tuple[bytes, Holder, bytes | None]]:
    """(entry key, holder, `relay.messages` value or None) of each entry that has a share."""
    for key, value in txn.scan(Table.RELAY_HOLDERS, b"", KEY_END):
        known, sender, peer = decode_relay_holder(key, value)
        yield key, Holder(known=known, sender=sender, peer=peer), txn.get(Table.RELAY_MESSAGES, key)


def _wire_bytes(message: bytes) -> int:
    """The envelope bytes of a `relay.messages` value (expires_ms u64 | message id | wire)."""
    return len(message) - 8 - ID_BYTES


def _share_keys(holder: Holder) -> tuple[tuple[Table, bytes], ...]:
    """The counters an entry of `holder` is counted in."""
    return (
        (Table.RELAY_SENDERS, holder.sender),
        (Table.RELAY_PEERS, relay_holder_key(holder.known, holder.peer)),
        (Table.RELAY_TOTALS, bytes([holder.known])),
    )


def _set_share_txn(txn: KvTxn, table: Table, key: bytes, usage: RelayUsage) -> None:
    if usage.count <= 0:
        txn.delete(table, key)
    else:
        txn.put(table, key, encode_relay_share(usage))


def _moved(usage: RelayUsage, count: int, size: int) -> RelayUsage:
    return RelayUsage(count=usage.count + count, bytes=usage.bytes + size)


def peer_share_txn(txn: KvTxn, known: bool, peer: bytes) -> RelayUsage:
    """What `peer` holds in one class."""
    return _share_txn(txn, Table.RELAY_PEERS, relay_holder_key(known, peer))


def class_share_txn(txn: KvTxn, known: bool) -> RelayUsage:
    """What one class holds in all."""
    return _share_txn(txn, Table.RELAY_TOTALS, bytes([known]))


def _move_txn(txn: KvTxn, holder: Holder, count: int, size: int) -> None:
    """Add (count, size) to every share of `holder`, keeping the size index in step."""
    sender = _share_txn(txn, Table.RELAY_SENDERS, holder.sender)
    _set_share_txn(txn, Table.RELAY_SENDERS, holder.sender, _moved(sender, count, size))
    peer_key = relay_holder_key(holder.known, holder.peer)
    peer = _share_txn(txn, Table.RELAY_PEERS, peer_key)
    grown = _moved(peer, count, size)
    if peer.count > 0:
        txn.delete(Table.RELAY_BY_SIZE, relay_size_key(holder.known, peer.bytes, holder.peer))
    if grown.count > 0:
        txn.put(Table.RELAY_BY_SIZE, relay_size_key(holder.known, grown.bytes, holder.peer), b"")
    _set_share_txn(txn, Table.RELAY_PEERS, peer_key, grown)
    total_key = bytes([holder.known])
    total = _share_txn(txn, Table.RELAY_TOTALS, total_key)
    _set_share_txn(txn, Table.RELAY_TOTALS, total_key, _moved(total, count, size))


def grant_share_txn(
    txn: KvTxn, holder: Holder, recipient: bytes, arrival: int, expires_ms: int, size: int
) -> None:
    """Count a newly held entry for its holder."""
    txn.put(
        Table.RELAY_HOLDERS,
        relay_message_key(recipient, arrival),
        encode_relay_holder(holder.known, holder.sender, holder.peer),
    )
    txn.put(
        Table.RELAY_BY_PEER,
        relay_by_peer_key(holder.known, holder.peer, expires_ms, recipient, arrival),
        b"",
    )
    _move_txn(txn, holder, 1, size)


def release_share_txn(
    txn: KvTxn, recipient: bytes, arrival: int, expires_ms: int, size: int
) -> None:
    """Return the share of an entry about to be removed (an entry held before shares existed
    has none). Moved while the entry is still held: a damaged share met here is recounted with
    it, then loses it (recounted after, it lost the entry twice)."""
    key = relay_message_key(recipient, arrival)
    value = txn.get(Table.RELAY_HOLDERS, key)
    if value is None:
        return
    known, sender, peer = decode_relay_holder(key, value)
    holder = Holder(known=known, sender=sender, peer=peer)
    _move_txn(txn, holder, -1, -size)
    txn.delete(Table.RELAY_HOLDERS, key)
    txn.delete(Table.RELAY_BY_PEER, relay_by_peer_key(known, peer, expires_ms, recipient, arrival))


def check_own_bounds_txn(txn: KvTxn, holder: Holder, size: int, quota: RelayQuota) -> None:
    """Refuse an entry past its sender's or peer's bounds: those never evict anything.

    Raises:
        QuotaExceeded: naming the bound.
    """
    sender = _share_txn(txn, Table.RELAY_SENDERS, holder.sender)
    _require(sender, size, quota.sender_count, quota.sender_bytes, f"sender {holder.sender.hex()}")
    stranger = peer_share_txn(txn, False, holder.peer)
    peer = _moved(stranger, *_pair(peer_share_txn(txn, True, holder.peer)))
    name = f"peer {holder.peer.decode('ascii', 'replace')}"
    _require(peer, size, quota.peer_count, quota.peer_bytes, name)
    if not holder.known:
        _require(
            stranger,
            size,
            quota.stranger_peer_count,
            quota.stranger_peer_bytes,
            "strangers' " + name,
        )


def _pair(usage: RelayUsage) -> tuple[int, int]:
    return usage.count, usage.bytes


def _require(usage: RelayUsage, size: int, max_count: int, max_bytes: int, what: str) -> None:
    if usage.count + 1 > max_count or usage.bytes + size > max_bytes:
        raise QuotaExceeded(
            f"relay bound of {what}: holds {usage.count} envelopes / {usage.bytes} bytes, "
            f"limits {max_count} / {max_bytes}, refused {size} more bytes"
        )


def largest_holder_txn(txn: KvTxn, known: bool) -> bytes | None:
    """The peer holding the most bytes in one class, if any."""
    prefix = bytes([known])
    for key, _ in txn.scan(Table.RELAY_BY_SIZE, prefix, prefix_end(prefix), reverse=True):
        return decode_relay_size_key(key)[1]
    return None


def oldest_entry_txn(txn: KvTxn, known: bool, peer: bytes) -> tuple[int, bytes, int] | None:
    """(expires_ms, recipient, arrival) of `peer`'s oldest entry in one class."""
    prefix = relay_holder_key(known, peer)
    for key, _ in txn.scan(Table.RELAY_BY_PEER, prefix, prefix_end(prefix)):
        return decode_relay_expiry_key(key[len(prefix) :])
    return None


def audit_shares_txn(txn: KvTxn) -> list[str]:
    """Differences between the kept counters and a recount from the held entries (empty when
    they agree): for tests, and for an operator's check of a store."""
    counted: dict[tuple[Table, bytes], RelayUsage] = {}
    indexed: set[bytes] = set()

    def add(table: Table, key: bytes, size: int) -> None:
        counted[table, key] = _moved(
            counted.get((table, key), RelayUsage(count=0, bytes=0)), 1, size
        )

    for key, holder, message in _held_txn(txn):
        if message is None:
            return [f"holder without an entry at {key.hex()}"]
        expires_ms = int.from_bytes(message[:8], "big")
        size = _wire_bytes(message)
        for table, share in _share_keys(holder):
            add(table, share, size)
        indexed.add(
            relay_by_peer_key(
                holder.known,
                holder.peer,
                expires_ms,
                key[:ID_BYTES],
                int.from_bytes(key[ID_BYTES:], "big"),
            )
        )
    problems = []
    for table in (Table.RELAY_SENDERS, Table.RELAY_PEERS, Table.RELAY_TOTALS):
        kept = {k: decode_relay_share(table, k, v) for k, v in txn.scan(table, b"", KEY_END)}
        recount = {k: u for (t, k), u in counted.items() if t is table}
        if kept != recount:
            problems.append(f"{table.value.decode()}: kept {kept}, recounted {recount}")
    sizes = {k for k, _ in txn.scan(Table.RELAY_BY_SIZE, b"", KEY_END)}
    expected = {
        relay_size_key(bool(k[0]), u.bytes, k[2:])
        for (t, k), u in counted.items()
        if t is Table.RELAY_PEERS
    }
    if sizes != expected:
        problems.append(f"relay.by_size: kept {len(sizes)} keys, expected {len(expected)}")
    if {k for k, _ in txn.scan(Table.RELAY_BY_PEER, b"", KEY_END)} != indexed:
        problems.append("relay.by_peer does not match the held entries")
    return problems
