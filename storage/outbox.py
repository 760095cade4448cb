"""The outbox: pending deliveries of stored messages to destination home nodes (`_txn` helpers).

`outbox.queue` is keyed by next attempt time first, so due entries are a prefix scan;
`outbox.by_message` (message id | destination -> next attempt time) finds an entry's queue key
for ack / reschedule and tells purge which events are still needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import LocalProtocolError

from .api import OutboxEntry
from .keys import (
    ID_BYTES,
    Table,
    decode_outbox_queue_key,
    outbox_message_key,
    outbox_queue_key,
    pack_u64,
    unpack_u64,
)
from .kv import KvTxn
from .records import corrupt, decode_outbox_value, encode_outbox_value

__all__ = [
    "ack_many_txn",
    "ack_txn",
    "enqueue_many_txn",
    "enqueue_txn",
    "reschedule_many_txn",
    "reschedule_txn",
    "take_due_txn",
]


def enqueue_txn(txn: KvTxn, destination: bytes, message_id: bytes, next_attempt_ms: int) -> bool:
    """Add a pending delivery of a stored message; False if it is already pending.

    Raises:
        LocalProtocolError: the message is not stored (the outbox only refers to history).
    """
    if txn.get(Table.MESSAGE_IDS, message_id) is None:
        raise LocalProtocolError(f"cannot enqueue unknown message {message_id.hex()}")
    if not txn.insert(
        Table.OUTBOX_BY_MESSAGE,
        outbox_message_key(message_id, destination),
        pack_u64(next_attempt_ms),
    ):
        return False
    txn.put(
        Table.OUTBOX_QUEUE,
        outbox_queue_key(next_attempt_ms, destination, message_id),
        encode_outbox_value(0, None),
    )
    return True


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


def _queue_key_txn(txn: KvTxn, destination: bytes, message_id: bytes) -> bytes | None:
    at = txn.get(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination))
    return None if at is None else outbox_queue_key(unpack_u64(at), destination, message_id)


def ack_txn(txn: KvTxn, destination: bytes, message_id: bytes) -> bool:
    """Remove a delivered entry; False if none was pending."""
    key = _queue_key_txn(txn, destination, message_id)
    if key is None:
        return False
    txn.delete(Table.OUTBOX_QUEUE, key)
    txn.delete(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination))
    return True


def reschedule_txn(
    txn: KvTxn, destination: bytes, message_id: bytes, next_attempt_ms: int, error: str | None
) -> bool:
    """Move a pending entry to `next_attempt_ms`, recording `error`; False if none."""
    key = _queue_key_txn(txn, destination, message_id)
    if key is None:
        return False
    value = txn.get(Table.OUTBOX_QUEUE, key)
    if value is None:
        raise corrupt(Table.OUTBOX_BY_MESSAGE, message_id, "has no queue entry")
    attempts, _ = decode_outbox_value(key, value)
    txn.delete(Table.OUTBOX_QUEUE, key)
    txn.put(
        Table.OUTBOX_QUEUE,
        outbox_queue_key(next_attempt_ms, destination, message_id),
        encode_outbox_value(attempts, error),
    )
    txn.put(
        Table.OUTBOX_BY_MESSAGE,
        outbox_message_key(message_id, destination),
        pack_u64(next_attempt_ms),
    )
    return True


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
    destination lacks it: waiting out an old lease or backoff helps nobody); never later.
    """
    new = 0
    for message_id, when in plan:
        if enqueue_txn(txn, destination, message_id, when):
            new += 1
            continue
        at = txn.get(Table.OUTBOX_BY_MESSAGE, outbox_message_key(message_id, destination))
        if at is None or unpack_u64(at) <= when:
            continue
        key = outbox_queue_key(unpack_u64(at), destination, message_id)
        value = txn.get(Table.OUTBOX_QUEUE, key)
        error = None if value is None else decode_outbox_value(key, value)[1]
        reschedule_txn(txn, destination, message_id, when, error)
    return new
