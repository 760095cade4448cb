"""Markers of what an absent user is owed (SPEC §11.5.2): `_txn` helpers over `outbox.absent`.

A group's members whose homes no record names (offline for long, or never seen) each got an
outbox entry per message, parked and relayed: thousands of rows per send and relay hops that
carried them. Instead, an envelope of our device for such a user extends a *marker*: the run of
sequence numbers (SPEC §8) of our device's events in one room that the user is owed. A run is
contiguous, since every sequenced event of a room goes to each of its members; a number that
does not follow the last run (a member removed and added again, two commits out of order)
starts a new one. The marker is an outbox entry in short form: purge keeps the events it names
(`pending_txn`), and once the user's home is tried (a probe, or a home reached) it turns into
the entries it stands for, parked in history order (`expand_txn`), before anything is unparked.

Owns: `outbox.absent` and its index by event, `outbox.absent_by_room`, written together and
dropped together, so each mirrors the other: a row of either that does not decode is rebuilt
from its mirror where it is met (SPEC §11.8.7), not contained as an unreadable item that would
stop every purge or every send to the room; so is a marker gone while its index row stands (a
purge meets the index row: the events it owes are kept, and the marker is written again so the
user is still probed), and an index row gone while its marker stands, written again at open
(`restore_index_txn`: a purge finds owed events through the index alone, so it purged them).
A row whose mirror is gone or damaged too has no source: a marker stays unreadable, an index
row is dropped (it owes nothing that a marker names).
"""

from __future__ import annotations

import logging

from hearthmesh.protocol.hlc import decode_timestamp
from hearthmesh.protocol.outbox import LEASE_MS

from .keys import (
    ID_BYTES,
    KEY_END,
    SEQ_BYTES,
    Table,
    absent_by_room_key,
    absent_key,
    decode_absent_by_room_key,
    decode_absent_key,
    history_key,
    pack_u64,
    peer_prefix,
    prefix_end,
    sender_seq_key,
    sequence_key,
    unpack_u64,
)
from .kv import KvTxn
from .outbox import destinations_txn, park_new_txn
from .records import decode_u64_at, log_u64_rebuilt

__all__ = [
    "absent_destinations_txn",
    "expand_txn",
    "mark_txn",
    "markers_txn",
    "pending_txn",
    "restore_index_txn",
]

log = logging.getLogger(__name__)


def mark_txn(txn: KvTxn, destination: bytes, room: bytes, sender_device: bytes, seq: int) -> None:
    """Note that event `seq` of `sender_device` in `room` is owed to `destination`: the run
    ending just before it grows by one, else a new run starts (one already covering it stays)."""
    prefix = peer_prefix(destination) + room + sender_device
    last = next(txn.scan(Table.OUTBOX_ABSENT, prefix, prefix_end(prefix), reverse=True), None)
    if last is not None:
        first_seq = decode_absent_key(last[0])[3]
        last_seq = _marker_last_txn(txn, *last, rebuild=True)
        if first_seq <= seq <= last_seq:
            return
        if seq == last_seq + 1:
            _put(txn, destination, room, sender_device, first_seq, seq)
            return
    # listed first, since a rebuild must not write under the cursor
    for key, value in list(txn.scan(Table.OUTBOX_ABSENT, prefix, prefix_end(prefix))):
        if decode_absent_key(key)[3] <= seq <= _marker_last_txn(txn, key, value, rebuild=True):
            return  # an earlier run has it already (a commit out of order)
    _put(txn, destination, room, sender_device, seq, seq)


def _put(
    txn: KvTxn, destination: bytes, room: bytes, device: bytes, first_seq: int, last_seq: int
) -> None:
    txn.put(
        Table.OUTBOX_ABSENT, absent_key(destination, room, device, first_seq), pack_u64(last_seq)
    )
    txn.put(
        Table.OUTBOX_ABSENT_BY_ROOM,
        absent_by_room_key(room, device, first_seq, destination),
        pack_u64(last_seq),
    )


def markers_txn(
    txn: KvTxn, destination: bytes, *, rebuild: bool = False
) -> list[tuple[bytes, bytes, int, int]]:
    """(room, sender device, first seq, last seq) of each marker of `destination`, in order; a
    damaged marker is answered from its index row, and rewritten if `rebuild` (`txn` writes)."""
    prefix = peer_prefix(destination)
    found = []
    for key, value in list(txn.scan(Table.OUTBOX_ABSENT, prefix, prefix_end(prefix))):
        _, room, device, first_seq = decode_absent_key(key)
        found.append((room, device, first_seq, _marker_last_txn(txn, key, value, rebuild=rebuild)))
    return found


def expand_txn(txn: KvTxn, destination: bytes) -> int:
    """Turn every marker of `destination` into the parked outbox entries it stands for, in
    history order (as if each had been parked at its commit), and drop the markers; returns how
    many entries were new. An event gone since (a recall purged it) is passed over."""
    markers = markers_txn(txn, destination, rebuild=True)
    owed: list[tuple[int, bytes]] = []
    for room, device, first_seq, last_seq in markers:
        for seq in range(first_seq, last_seq + 1):
            hlc = txn.get(Table.BY_SENDER, sender_seq_key(room, device, seq))
            if hlc is None:
                continue
            value = txn.get(Table.HISTORY, history_key(room, hlc, device, seq))
            if value is None:
                continue
            # The entry a commit would have written was due a lease after its time, and parked
            # under that time: the same key keeps history order among the parked entries.
            owed.append((decode_timestamp(hlc).wall_ms + LEASE_MS, value[:ID_BYTES]))
        txn.delete(Table.OUTBOX_ABSENT, absent_key(destination, room, device, first_seq))
        txn.delete(
            Table.OUTBOX_ABSENT_BY_ROOM, absent_by_room_key(room, device, first_seq, destination)
        )
    return sum(park_new_txn(txn, destination, message_id, when) for when, message_id in owed)


def pending_txn(txn: KvTxn, room: bytes, sender_device: bytes, seq: int) -> bool:
    """True if a marker still owes event `seq` of `sender_device` in `room` to someone.

    `txn` writes (purge calls this): a damaged index row is rebuilt here."""
    prefix = sequence_key(room, sender_device)
    # runs that start by `seq`; listed first, since a rebuild must not write under the cursor
    runs = list(txn.scan(Table.OUTBOX_ABSENT_BY_ROOM, prefix, prefix + pack_u64(seq + 1)))
    return any(_owes_txn(txn, at, last, seq) for at, last in runs)


def _owes_txn(txn: KvTxn, key: bytes, value: bytes, seq: int) -> bool:
    """True if the `outbox.absent_by_room` row `key` owes `seq`. The run that keeps an event
    has its marker checked (one read per kept event): a marker gone is written again from the
    row, so the user it names is still probed and sent what it is owed."""
    if len(value) != SEQ_BYTES:
        return _index_last_txn(txn, key, value) >= seq
    last_seq = unpack_u64(value)
    if last_seq < seq:
        return False
    destination, room, device, first_seq = decode_absent_by_room_key(key)
    marker = absent_key(destination, room, device, first_seq)
    if txn.get(Table.OUTBOX_ABSENT, marker) is None:
        txn.put(Table.OUTBOX_ABSENT, marker, value)
        log_u64_rebuilt(
            log, Table.OUTBOX_ABSENT, marker, None, Table.OUTBOX_ABSENT_BY_ROOM, last_seq
        )
    return True


def _index_last_txn(txn: KvTxn, key: bytes, value: bytes) -> int:
    """The last seq of the damaged `outbox.absent_by_room` row `key`, rewritten from its
    `outbox.absent` marker, or dropped with no marker (it owes nothing)."""
    destination, room, device, first_seq = decode_absent_by_room_key(key)
    marker = absent_key(destination, room, device, first_seq)
    source = txn.get(Table.OUTBOX_ABSENT, marker)
    if source is None:
        last_seq = 0
        txn.delete(Table.OUTBOX_ABSENT_BY_ROOM, key)
    else:
        last_seq = decode_u64_at(Table.OUTBOX_ABSENT, marker, source)
        txn.put(Table.OUTBOX_ABSENT_BY_ROOM, key, pack_u64(last_seq))
    result = "no marker, dropped" if source is None else last_seq
    log_u64_rebuilt(log, Table.OUTBOX_ABSENT_BY_ROOM, key, value, Table.OUTBOX_ABSENT, result)
    return last_seq


def _marker_last_txn(txn: KvTxn, key: bytes, value: bytes, *, rebuild: bool) -> int:
    """The last seq of the `outbox.absent` marker `key`. One that does not decode is answered
    from its index row, and rewritten and logged once if `rebuild` (`txn` writes); with no
    readable index row it stays unreadable (contained: no source)."""
    if len(value) == SEQ_BYTES:
        return unpack_u64(value)
    destination, room, device, first_seq = decode_absent_key(key)
    index = absent_by_room_key(room, device, first_seq, destination)
    source = txn.get(Table.OUTBOX_ABSENT_BY_ROOM, index)
    if source is None or len(source) != SEQ_BYTES:
        return decode_u64_at(Table.OUTBOX_ABSENT, key, value)  # raises: no source
    last_seq = unpack_u64(source)
    if rebuild:
        txn.put(Table.OUTBOX_ABSENT, key, source)
        log_u64_rebuilt(log, Table.OUTBOX_ABSENT, key, value, Table.OUTBOX_ABSENT_BY_ROOM, last_seq)
    return last_seq


def restore_index_txn(txn: KvTxn) -> int:
    """Write again the `outbox.absent_by_room` row of each readable marker that has none, and
    log each (at open: one scan of the markers and one get each). Without its row a marker's
    events were purged (`pending_txn` finds them through the index) and its user's probe sent
    none of them. Returns how many rows were written."""
    missing = []
    for key, value in txn.scan(Table.OUTBOX_ABSENT, b"", KEY_END):
        destination, room, device, first_seq = decode_absent_key(key)
        index = absent_by_room_key(room, device, first_seq, destination)
        if len(value) == SEQ_BYTES and txn.get(Table.OUTBOX_ABSENT_BY_ROOM, index) is None:
            missing.append((index, value))
    for index, value in missing:  # after the scan: never mutate under a cursor
        txn.put(Table.OUTBOX_ABSENT_BY_ROOM, index, value)
        log_u64_rebuilt(
            log, Table.OUTBOX_ABSENT_BY_ROOM, index, None, Table.OUTBOX_ABSENT, unpack_u64(value)
        )
    return len(missing)


def absent_destinations_txn(txn: KvTxn) -> list[bytes]:
    """Every destination with a marker (one seek per destination)."""
    return destinations_txn(txn, Table.OUTBOX_ABSENT)
