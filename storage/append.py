"""Appending events: history, ids, arrival log, outbox, conversation lists and media references,
all in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from hearthmesh.protocol.addressing import is_sequenced
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.hlc import encode_timestamp

from .absent import mark_txn
from .actions import index_action_txn
from .api import AppendRequest, AppendResult, Cursor, FeedEntry, StoredEvent
from .arrivals import ArrivalCounter
from .keys import Table, decode_slot, history_key, sender_seq_key
from .kv import KvTxn
from .media_refs import note_media_txn
from .outbox import enqueue_stored_txn
from .rooms import bump_conversation_txn, local_members_txn
from .sequences import raise_seq_txn

__all__ = ["append_batch_txn", "check_appendable"]


def check_appendable(request: AppendRequest) -> None:
    """Reject what must never be stored, before any transaction starts.

    Raises:
        LocalProtocolError: an ephemeral kind (SPEC §5.2: typing and presence are not stored).
    """
    if request.envelope.kind.ephemeral:
        raise LocalProtocolError(f"{request.envelope.kind.name} events are never stored")


def append_batch_txn(
    txn: KvTxn,
    requests: Sequence[AppendRequest],
    entries: list[FeedEntry | None] | None = None,
) -> list[AppendResult]:
    """Append each request in order; a duplicate or a conflict writes nothing for that request.

    `entries`, if given, gets each request's arrival-log entry as this transaction numbered it
    (None where nothing was stored): the request's own envelope, for a caller that tells it to
    clients without reading it back (`KvStore.append_entries`).
    """
    results = []
    arrivals = ArrivalCounter()
    for request in requests:
        envelope = request.envelope
        hlc = encode_timestamp(envelope.hlc)
        key = history_key(envelope.room, hlc, envelope.sender_device, envelope.seq)
        if not txn.insert(Table.MESSAGE_IDS, envelope.message_id, key):  # or recalled (§31.1)
            results.append(AppendResult.DUPLICATE)
            if entries is not None:
                entries.append(None)
            continue
        if not txn.insert(Table.HISTORY, key, envelope.message_id + envelope.wire):
            txn.delete(Table.MESSAGE_IDS, envelope.message_id)  # undo: nothing else was written
            results.append(AppendResult.CONFLICT)
            if entries is not None:
                entries.append(None)
            continue
        number = arrivals.record_txn(txn, key)
        if entries is not None:
            event = StoredEvent(envelope=envelope, cursor=Cursor(decode_slot(key)[1]))
            entries.append(FeedEntry(number=number, event=event))
        if is_sequenced(envelope):  # a RECEIPT has no number to find it by (SPEC §8.5)
            # The first event stored under a number keeps it, as the first released does.
            by_sender = sender_seq_key(envelope.room, envelope.sender_device, envelope.seq)
            txn.insert(Table.BY_SENDER, by_sender, hlc)
            raise_seq_txn(txn, envelope.room, envelope.sender_device, envelope.seq)
        for destination in request.outbox_to:
            enqueue_stored_txn(txn, destination, envelope.message_id, request.next_attempt_ms)
        for destination in request.absent_to:
            if is_sequenced(envelope):
                mark_txn(txn, destination, envelope.room, envelope.sender_device, envelope.seq)
            else:  # no number to name it by: an entry of its own
                enqueue_stored_txn(txn, destination, envelope.message_id, request.next_attempt_ms)
        for user in local_members_txn(txn, envelope.room):
            bump_conversation_txn(txn, user, envelope.room, hlc)
        note_media_txn(txn, envelope)
        if request.acts_on is not None:
            index_action_txn(txn, request.acts_on, envelope.message_id)
        results.append(AppendResult.STORED)
    return results
