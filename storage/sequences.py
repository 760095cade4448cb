"""A sender's highest sequence number in a room (`history.sequences`), rebuilt when damaged.

The row is derived: each append that stores a sequenced event writes the event's
`history.by_sender` entry and raises the row in the same transaction, so the row is the highest
number in `by_sender`, or higher once a purge or a recall removed the newest events (their
numbers are never given again: a sender resumes its numbering here). A row that does not
decode is therefore rebuilt rather than contained as one unreadable item (SPEC §11.8.7): from
the highest number in `by_sender`, never below the highest number a purge or a recall took
out of `by_sender` (`history.sequence_floors`, written by each removal, so no number stored
here is ever given again) nor the sender's release progress (numbers released to the app).
Reads answer from those sources without writing; the next append rewrites the row in its own
write transaction and logs the repair once (the row is whole again after it).

A store written before the floors existed made removals that raised none: at its first open
with them, each healthy row above the highest number left in `by_sender` (its newest events
were removed) becomes its sender's floor, once (`fill_sequence_floors_txn`, marked done in
`meta.settings`). The row is at least every number ever stored, so it is a floor that holds;
recall tombstones name no numbers and a purge leaves no mark, so the rows are the one source.
"""

from __future__ import annotations

import logging
from typing import Final

from .directory import setting_key
from .keys import (
    KEY_END,
    SEQ_BYTES,
    Table,
    pack_u64,
    prefix_end,
    release_key,
    sequence_key,
    unpack_u64,
)
from .kv import KvTxn
from .records import log_u64_rebuilt

__all__ = [
    "SEQUENCE_FLOORS_FILLED_SETTING",
    "fill_sequence_floors_txn",
    "last_seq_txn",
    "note_removed_txn",
    "raise_seq_txn",
]

log = logging.getLogger(__name__)

SEQUENCE_FLOORS_FILLED_SETTING: Final = "storage.sequence_floors"
"""Set once the floors of removals made before floors existed were seeded."""


def last_seq_txn(txn: KvTxn, room: bytes, sender_device: bytes) -> int:
    """The highest sequence number of `sender_device` stored in `room`, 0 if none; a damaged
    row is answered from its sources (nothing written: `txn` may be a read)."""
    key = sequence_key(room, sender_device)
    value = txn.get(Table.SEQUENCES, key)
    if value is None:
        return 0
    if len(value) != SEQ_BYTES:
        return _rebuilt_txn(txn, room, sender_device)
    return unpack_u64(value)


def raise_seq_txn(txn: KvTxn, room: bytes, sender_device: bytes, seq: int) -> None:
    """In a write transaction that stored `seq` (and its `by_sender` entry): raise the row to
    `seq`, rebuilding a damaged row first."""
    key = sequence_key(room, sender_device)
    value = txn.get(Table.SEQUENCES, key)
    if value is not None and len(value) != SEQ_BYTES:
        highest = max(_rebuilt_txn(txn, room, sender_device), seq)
        txn.put(Table.SEQUENCES, key, pack_u64(highest))
        log_u64_rebuilt(log, Table.SEQUENCES, key, value, Table.BY_SENDER, highest)
    elif value is None or unpack_u64(value) < seq:
        txn.put(Table.SEQUENCES, key, pack_u64(seq))


def note_removed_txn(txn: KvTxn, row: bytes, seq: int) -> None:
    """In the write transaction that takes event `seq` out of `by_sender` (`row`: room | sender
    device): raise the sender's floor to `seq`. A removal, not an append, pays this write."""
    if _floor_txn(txn, row) < seq:  # a damaged floor is replaced: `history.sequences` holds
        txn.put(Table.SEQUENCE_FLOORS, row, pack_u64(seq))


def _floor_txn(txn: KvTxn, row: bytes) -> int:
    value = txn.get(Table.SEQUENCE_FLOORS, row)
    return unpack_u64(value) if value is not None and len(value) == SEQ_BYTES else 0


def fill_sequence_floors_txn(txn: KvTxn) -> int:
    """Seed the floors of removals made before floors existed, once per store: each healthy
    row above the highest number left in `by_sender` (a damaged one has no source). Returns
    how many floors were seeded."""
    done = setting_key(SEQUENCE_FLOORS_FILLED_SETTING)
    if txn.get(Table.SETTINGS, done) is not None:
        return 0
    seeded = []
    for row, value in txn.scan(Table.SEQUENCES, b"", KEY_END):
        if len(value) != SEQ_BYTES:
            continue
        highest = unpack_u64(value)
        if highest > max(_highest_stored_txn(txn, row), _floor_txn(txn, row)):
            seeded.append((row, value))
    for row, value in seeded:  # after the scan: never mutate under a cursor
        txn.put(Table.SEQUENCE_FLOORS, row, value)
    txn.put(Table.SETTINGS, done, b"1")
    if seeded:
        log.info("seeded %d sequence floors of removals made before floors existed", len(seeded))
    return len(seeded)


def _highest_stored_txn(txn: KvTxn, row: bytes) -> int:
    """The highest number in `by_sender` of `row` (room | sender device), 0 if none."""
    last = next(txn.scan(Table.BY_SENDER, row, prefix_end(row), reverse=True), None)
    return 0 if last is None else unpack_u64(last[0][-SEQ_BYTES:])


def _rebuilt_txn(txn: KvTxn, room: bytes, sender_device: bytes) -> int:
    """The row's value from its sources: the highest number in `by_sender` or removed from it,
    at least the last one released to the app (a damaged floor or progress row counts for
    nothing here)."""
    prefix = sequence_key(room, sender_device)  # by_sender keys: room | device | seq
    highest = max(_highest_stored_txn(txn, prefix), _floor_txn(txn, prefix))
    progress = txn.get(Table.SYNC, release_key(room, sender_device))
    if progress is not None and len(progress) == SEQ_BYTES:
        highest = max(highest, unpack_u64(progress) - 1)
    return highest
