"""The outbox: pending deliveries of stored messages to destination home nodes (`_txn` helpers).

`outbox.queue` is keyed by next attempt time first, so due entries are a prefix scan;
`outbox.by_message` (message id | destination -> next attempt time) finds an entry's queue key
for ack / reschedule and tells purge which events are still needed. The entries of a
destination that is down are parked in `outbox.parked` (SPEC §11.5.2): out of the due queue,
in their order, until the destination is tried again; so a long outage costs nothing per entry
between tries.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import LocalProtocolError

from .api import OutboxEntry
from .keys import (
    ID_BYTES,
    KEY_END,
    Table,
    decode_outbox_parked_key,
    decode_outbox_queue_key,
    outbox_message_key,
    outbox_parked_key,
    outbox_queue_key,
    pack_u64,
    peer_prefix,
    prefix_end,
)
from .kv import KvTxn
from .records import corrupt, decode_outbox_value, decode_u64_at, encode_outbox_value

__all__ = [
    "ack_many_txn",
    "ack_txn",
    "destinations_txn",
    "enqueue_many_txn",
    "enqueue_stored_txn",
    "enqueue_txn",
    "next_due_txn",
    "park_many_txn",
    "park_new_txn",
    "parked_destinations_txn",
    "reschedule_many_txn",
    "reschedule_txn",
    "take_due_txn",
    "unpark_txn",
]

_PARKED: Final = b"p"
"""Suffix of an `outbox.by_message` value whose entry is parked."""


def enqueue_txn(txn: KvTxn, destination: bytes, message_id: bytes, next_attempt_ms: int) -> bool:
    """Add a pending delivery of a stored message; False if it is already pending.

    Raises:
        LocalProtocolError: the message is not stored (the outbox only refers to history).
    """
    if not txn.get(Table.MESSAGE_IDS, message_id):  # not stored, or purged by a recall
        raise LocalProtocolError(f"cannot enqueue unknown message {message_id.hex()}")
    return enqueue_stored_txn(txn, destination, message_id, next_attempt_ms)


def enqueue_stored_txn(
    txn: KvTxn, destination: bytes, message_id: bytes, next_attempt_ms: int
) -> bool:
    """`enqueue_txn` for a message this transaction has just stored (the append's own entries),
    which needs no read to know it is there; False if it is already pending."""
    return _add_txn(txn, destination, message_id, Table.OUTBOX_QUEUE, next_attempt_ms)


def _wire_txn(txn: KvTxn, message_id: bytes) -> bytes:
    slot = txn.get(Table.MESSAGE_IDS, message_id)
    value = None if slot is None else txn.get(Table.HISTORY, slot)
    if value is None:
        raise corrupt(Table.OUTBOX_BY_MESSAGE, message_id, "refers to a message not in history")
    return value[ID_BYTES:]


def take_due_txn(txn: KvTxn, now_ms: int, limit: int, lease_ms: int) -> list[OutboxEntry]:
    """Hand out up to `limit` entries due at `now_ms`, each leased until `now_ms + lease_ms`."""
    if limit < 1 or lease_ms < 0:
        raise LocalProtocolError(
            f"take_due needs limit >= 1 and lease_ms >= 0 ({limit}, {lease_ms})"
        )
    due: list[tuple[bytes, bytes]] = []
    for item in txn.scan(Table.OUTBOX_QUEUE, b"", pack_u64(now_ms + 1)):
        due.append(item)
        if len(due) == limit:
            break
    leased_ms = now_ms + lease_ms
    entries = []
    for key, value in due:
        _, destination, message_id = decode_outbox_queue_key(key)
        attempts, error = decode_outbox_value(key, value)
        txn.delete(Table.OUTBOX_QUEUE, key)
        txn.put(
            Table.OUTBOX_QUEUE,
            outbox_queue_key(leased_ms, destination, message_id),
            encode_outbox_value(attempts + 1, error),
        )
        txn.put(
            Table.OUTBOX_BY_MESSAGE,
            outbox_message_key(message_id, destination),
            pack_u64(leased_ms),
        )
        entries.append(
            OutboxEntry(
                destination=destination,
                message_id=MessageId(message_id),
                next_attempt_ms=leased_ms,
                attempts=attempts + 1,
                last_error=error,
                wire=_wire_txn(txn, message_id),
            )
        )
    return entries


def next_due_txn(txn: KvTxn) -> int | None:
    """When the earliest queued entry comes due (leased ones included), None if none is
    queued: one seek, the queue being keyed by that time."""
    first = next(txn.scan(Table.OUTBOX_QUEUE, b"", KEY_END), None)
    return None if first is None else decode_outbox_queue_key(first[0])[0]


def _locate_txn(txn: KvTxn, destination: bytes, message_id: bytes) -> tuple[Table, bytes] | None:
    """The table and key of a pending entry (queued or parked), None if there is none."""
    key = outbox_message_key(message_id, destination)
    at = txn.get(Table.OUTBOX_BY_MESSAGE, key)
    if at is None:
        return None
    when = decode_u64_at(Table.OUTBOX_BY_MESSAGE, key, at[:8])
    if at[8:] == _PARKED:
        return Table.OUTBOX_PARKED, outbox_parked_key(destination, when, message_id)
    return Table.OUTBOX_QUEUE, outbox_queue_key(when, destination, message_id)


def _move_txn(
    txn: KvTxn, destination: bytes, message_id: bytes, to: Table, when: int, value: bytes
) -> None:
    """Write a pending entry (its old key already deleted) into `to` at time `when`."""
    if to is Table.OUTBOX_PARKED:
        txn.put(to, outbox_parked_key(destination, when, message_id), value)
        at = pack_u64(when) + _PARKED
    else:
        txn.put(to, outbox_queue_key(when, destination, message_id), value)
        at = pack_u64(when)
    txn.put(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination), at)


def park_new_txn(txn: KvTxn, destination: bytes, message_id: bytes, queued_ms: int) -> bool:
    """Add a parked entry for a stored message (a marker's, `storage.absent`); False if one is
    pending already (queued or parked), which stays as it is."""
    return _add_txn(txn, destination, message_id, Table.OUTBOX_PARKED, queued_ms)


def _add_txn(txn: KvTxn, destination: bytes, message_id: bytes, to: Table, when: int) -> bool:
    """A new entry (no attempt yet) in `to` at time `when`; False if one is pending already."""
    at = pack_u64(when) + (_PARKED if to is Table.OUTBOX_PARKED else b"")
    if not txn.insert(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination), at):
        return False
    if to is Table.OUTBOX_PARKED:
        txn.put(to, outbox_parked_key(destination, when, message_id), encode_outbox_value(0, None))
    else:
        txn.put(to, outbox_queue_key(when, destination, message_id), encode_outbox_value(0, None))
    return True


def ack_txn(txn: KvTxn, destination: bytes, message_id: bytes) -> bool:
    """Remove a delivered entry (queued or parked); False if none was pending."""
    found = _locate_txn(txn, destination, message_id)
    if found is None:
        return False
    txn.delete(*found)
    txn.delete(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination))
    return True


def reschedule_txn(
    txn: KvTxn, destination: bytes, message_id: bytes, next_attempt_ms: int, error: str | None
) -> bool:
    """Move a pending entry (queued or parked) to `next_attempt_ms`, recording `error`."""
    found = _locate_txn(txn, destination, message_id)
    if found is None:
        return False
    value = txn.get(*found)
    if value is None:
        raise corrupt(Table.OUTBOX_BY_MESSAGE, message_id, "has no queue entry")
    attempts, _ = decode_outbox_value(found[1], value)
    txn.delete(*found)
    _move_txn(
        txn,
        destination,
        message_id,
        Table.OUTBOX_QUEUE,
        next_attempt_ms,
        encode_outbox_value(attempts, error),
    )
    return True


def park_many_txn(txn: KvTxn, destination: bytes, message_ids: Sequence[bytes]) -> int:
    """Take queued entries of a destination that is down out of the due queue, keeping their
    order; returns how many were parked (already parked or gone ones are passed over)."""
    parked = 0
    for message_id in message_ids:
        found = _locate_txn(txn, destination, message_id)
        if found is None or found[0] is Table.OUTBOX_PARKED:
            continue
        value = txn.get(*found)
        if value is None:
            raise corrupt(Table.OUTBOX_BY_MESSAGE, message_id, "has no queue entry")
        txn.delete(*found)
        queued_ms, _, _ = decode_outbox_queue_key(found[1])
        _move_txn(txn, destination, message_id, Table.OUTBOX_PARKED, queued_ms, value)
        parked += 1
    return parked


def unpark_txn(txn: KvTxn, destination: bytes, now_ms: int, limit: int) -> int:
    """Put up to `limit` of a destination's parked entries, oldest first, back in the queue,
    due at once and still in order; returns how many."""
    if limit < 1:
        raise LocalProtocolError(f"unpark needs limit >= 1, got {limit}")
    prefix = peer_prefix(destination)
    moving = list(
        itertools.islice(txn.scan(Table.OUTBOX_PARKED, prefix, prefix_end(prefix)), limit)
    )
    first_ms = max(0, now_ms - len(moving))
    for i, (key, value) in enumerate(moving):  # written after the scan: never under a cursor
        _, _, message_id = decode_outbox_parked_key(key)
        txn.delete(Table.OUTBOX_PARKED, key)
        _move_txn(txn, destination, message_id, Table.OUTBOX_QUEUE, first_ms + i, value)
    return len(moving)


def parked_destinations_txn(txn: KvTxn) -> list[bytes]:
    """Every destination with parked entries (one seek per destination)."""
    return destinations_txn(txn, Table.OUTBOX_PARKED)


def destinations_txn(txn: KvTxn, table: Table) -> list[bytes]:
    """Every destination with a key in `table`, whose keys start `len u8 | destination` (the
    parked entries, the absent users' markers): one seek per destination."""
    found: list[bytes] = []
    position = b""
    while (item := next(txn.scan(table, position, KEY_END), None)) is not None:
        destination = item[0][1 : 1 + item[0][0]]
        found.append(destination)
        position = prefix_end(peer_prefix(destination))
    return found


def ack_many_txn(txn: KvTxn, destination: bytes, message_ids: Sequence[bytes]) -> int:
    """Remove delivered entries; returns how many were pending."""
    return sum(ack_txn(txn, destination, message_id) for message_id in message_ids)


def reschedule_many_txn(
    txn: KvTxn, destination: bytes, plan: Sequence[tuple[bytes, int]], error: str | None
) -> int:
    """Move each (message id, next attempt) entry; returns how many were pending."""
    return sum(reschedule_txn(txn, destination, m, when, error) for m, when in plan)


def enqueue_many_txn(txn: KvTxn, destination: bytes, plan: Sequence[tuple[bytes, int]]) -> int:
    """Enqueue (message id, attempt at) pairs; returns how many were new.

    An entry already pending is moved earlier if the plan wants it sooner (a repair found the
    destination lacks it: waiting out an old lease or backoff helps nobody), a parked one back
    into the queue; never later.
    """
    new = 0
    for message_id, when in plan:
        if enqueue_txn(txn, destination, message_id, when):
            new += 1
            continue
        found = _locate_txn(txn, destination, message_id)
        if found is None:
            continue
        table, key = found
        if table is Table.OUTBOX_QUEUE and decode_outbox_queue_key(key)[0] <= when:
            continue
        value = txn.get(table, key)
        error = None if value is None else decode_outbox_value(key, value)[1]
        reschedule_txn(txn, destination, message_id, when, error)
    return new
