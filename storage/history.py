"""Room history reads, per-recipient status and retention purge (`_txn` helpers).

A history value is message id | envelope wire: the id makes purge and lookups work without
re-parsing the envelope, and `load_envelope` re-derives it from the wire when an event is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hearthmesh.protocol.e2ee.megolm import (
    ENCRYPTED_CONTENT_TYPE,
    decode_encrypted_body,
    decode_plaintext,
    opened_view,
)
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import LocalProtocolError, MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.hlc import TIMESTAMP_BYTES

from . import absent, sequences
from .api import (
    MAX_SENDER_RANGE,
    Cursor,
    DeliveryStatus,
    Direction,
    HistoryPage,
    StatusRecord,
    StoredEvent,
)
from .crypto import forget_plaintext_txn, unhold_txn
from .keys import (
    ID_BYTES,
    KEY_END,
    SEQ_BYTES,
    SLOT_BYTES,
    WITHDRAWN_SLOT,
    Table,
    decode_slot,
    history_key,
    pack_u64,
    prefix_end,
    sender_seq_key,
    unpack_u64,
)
from .kv import KvTxn
from .records import corrupt, decode_envelope_at, decode_status, encode_status

__all__ = [
    "MAX_HISTORY_PAGE",
    "MAX_SENDER_RANGE",
    "fill_sender_index_txn",
    "get_event_txn",
    "latest_event_txn",
    "page_history_txn",
    "purge_events_txn",
    "sender_events_txn",
    "set_status_txn",
    "statuses_txn",
    "stored_event",
    "withdraw_event_txn",
]

MAX_HISTORY_PAGE = 1000


def stored_event(
    txn: KvTxn, key: bytes, value: bytes, in_hand: Mapping[bytes, Envelope] | None = None
) -> StoredEvent:
    """Decode one `history.events` item; StorageError names the key if it is damaged.

    An envelope in `in_hand` under the item's message id, with the same wire bytes, is the
    item already decoded: it is taken as it is. An encrypted event that opened here is shown
    with its content in the clear (`e2ee.opened_view`, SPEC §27.7).
    """
    held = None if in_hand is None else in_hand.get(value[:ID_BYTES])
    if held is not None and held.wire == value[ID_BYTES:]:
        envelope = held
    else:
        envelope = decode_envelope_at(Table.HISTORY, key, value[ID_BYTES:])
        if envelope.message_id != value[:ID_BYTES]:
            raise corrupt(Table.HISTORY, key, "message id does not match the envelope")
    if envelope.content_type == ENCRYPTED_CONTENT_TYPE:
        envelope = _opened(txn, envelope)
    return StoredEvent(envelope=envelope, cursor=Cursor(decode_slot(key)[1]))


def _opened(txn: KvTxn, envelope: Envelope) -> Envelope:
    plaintext = txn.get(Table.E2EE_PLAINTEXT, envelope.message_id)
    if plaintext is None:
        return envelope  # not opened here (yet): readers see the ciphertext's content type
    try:
        content_type, body = decode_plaintext(plaintext, kept=True)
    except RemoteProtocolError:
        raise corrupt(Table.E2EE_PLAINTEXT, envelope.message_id, "not [type, body]") from None
    return opened_view(envelope, content_type, body)


def get_event_txn(
    txn: KvTxn, message_id: bytes, in_hand: Mapping[bytes, Envelope] | None = None
) -> StoredEvent | None:
    """The event stored under `message_id`; one in `in_hand` is not decoded (`stored_event`)."""
    key = txn.get(Table.MESSAGE_IDS, message_id)
    if not key:  # never stored, or recalled and purged (WITHDRAWN_SLOT)
        return None
    value = txn.get(Table.HISTORY, key)
    if value is None:
        raise corrupt(Table.MESSAGE_IDS, message_id, "points at a missing history entry")
    return stored_event(txn, key, value, in_hand)


def latest_event_txn(txn: KvTxn, room: bytes) -> StoredEvent | None:
    """The newest event of `room`."""
    for key, value in txn.scan(Table.HISTORY, room, prefix_end(room), reverse=True):
        return stored_event(txn, key, value)
    return None


def page_history_txn(
    txn: KvTxn, room: bytes, *, direction: Direction, cursor: Cursor | None, limit: int
) -> HistoryPage:
    """Up to `limit` events beyond `cursor` (exclusive), returned oldest first.

    Raises:
        MalformedMessage: the cursor did not come from a page (it may come from a client).
        LocalProtocolError: `limit` outside 1..MAX_HISTORY_PAGE.
    """
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise LocalProtocolError(f"history page limit must be 1..{MAX_HISTORY_PAGE}, got {limit}")
    if cursor is not None and len(cursor) != SLOT_BYTES:
        raise MalformedMessage("not a history cursor")
    if direction is Direction.BACKWARD:
        start, end = room, (room + cursor if cursor is not None else prefix_end(room))
    else:
        # Keys are fixed-width, so the next key after `room + cursor` is at least this.
        start = room + cursor + b"\x00" if cursor is not None else room
        end = prefix_end(room)
    items: list[tuple[bytes, bytes]] = []
    for item in txn.scan(Table.HISTORY, start, end, reverse=direction is Direction.BACKWARD):
        items.append(item)
        if len(items) > limit:
            break
    more = len(items) > limit
    events = [stored_event(txn, k, v) for k, v in items[:limit]]
    next_cursor = events[-1].cursor if more else None
    if direction is Direction.BACKWARD:
        events.reverse()
    return HistoryPage(events=tuple(events), next=next_cursor)


def set_status_txn(
    txn: KvTxn, message_id: bytes, recipient: bytes, status: DeliveryStatus, now_ms: int
) -> bool:
    """Raise the status (never lower it); False if unchanged or the message is not stored."""
    if not txn.get(Table.MESSAGE_IDS, message_id):  # not stored, or purged by a recall
        return False
    key = message_id + recipient
    old = txn.get(Table.STATUS, key)
    if old is not None and decode_status(key, old)[0] >= status:
        return False
    txn.put(Table.STATUS, key, encode_status(status, now_ms))
    return True


def statuses_txn(txn: KvTxn, message_id: bytes) -> list[StatusRecord]:
    """All recipients' statuses of one message."""
    records = []
    for key, value in txn.scan(Table.STATUS, message_id, prefix_end(message_id)):
        status, updated_ms = decode_status(key, value)
        records.append(StatusRecord(recipient=key[ID_BYTES:], status=status, updated_ms=updated_ms))
    return records


def _pending_delivery_txn(txn: KvTxn, key: bytes, message_id: bytes) -> bool:
    """An outbox entry, or an absent user's marker (SPEC §11.5.2), still needs the event."""
    for _ in txn.scan(Table.OUTBOX_BY_MESSAGE, message_id, prefix_end(message_id)):
        return True
    room, at = decode_slot(key)
    device = at[TIMESTAMP_BYTES : TIMESTAMP_BYTES + ID_BYTES]
    return absent.pending_txn(txn, room, device, unpack_u64(at[TIMESTAMP_BYTES + ID_BYTES :]))


def purge_events_txn(
    txn: KvTxn,
    cutoff_ms: int,
    limit: int,
    *,
    on_removed: Callable[[KvTxn, bytes, bytes], None],
) -> tuple[int, int]:
    """Remove up to `limit` events with wall time before `cutoff_ms`, room by room.

    Events that an outbox entry still needs stay; `on_removed(txn, key, value)` drops what
    other tables keep of each removed event. Returns (removed, kept for outbox).
    """
    removed = kept = 0
    position = b""
    while removed < limit:
        first = next(txn.scan(Table.HISTORY, position, KEY_END), None)
        if first is None:
            break
        room = first[0][:ID_BYTES]
        doomed: list[tuple[bytes, bytes]] = []
        for key, value in txn.scan(Table.HISTORY, room, room + pack_u64(cutoff_ms)):
            if removed + len(doomed) == limit:
                break
            if _pending_delivery_txn(txn, key, value[:ID_BYTES]):
                kept += 1
            else:
                doomed.append((key, value))
        for key, value in doomed:  # after the scan: never mutate under a cursor
            on_removed(txn, key, value)
            _remove_txn(txn, key, value)
        removed += len(doomed)
        position = prefix_end(room)
    return removed, kept


def withdraw_event_txn(
    txn: KvTxn, event: StoredEvent, *, on_removed: Callable[[KvTxn, bytes, bytes], None]
) -> None:
    """Remove a recalled event (SPEC §31.1): its history entry, indexes and statuses; its id
    stays in `history.ids` as WITHDRAWN_SLOT, so a later copy is a duplicate at no extra cost
    to an append. `on_removed(txn, key, value)` drops what other tables keep of it first."""
    envelope = event.envelope
    key = envelope.room + bytes(event.cursor)
    value = envelope.message_id + envelope.wire
    on_removed(txn, key, value)
    _remove_txn(txn, key, value)
    txn.put(Table.MESSAGE_IDS, envelope.message_id, WITHDRAWN_SLOT)


def _remove_txn(txn: KvTxn, key: bytes, value: bytes) -> None:
    message_id = value[:ID_BYTES]
    txn.delete(Table.HISTORY, key)
    _unindex_sender_txn(txn, key)
    txn.delete(Table.MESSAGE_IDS, message_id)
    _forget_opened_txn(txn, key, value)
    statuses = [k for k, _ in txn.scan(Table.STATUS, message_id, prefix_end(message_id))]
    for status_key in statuses:
        txn.delete(Table.STATUS, status_key)


def _forget_opened_txn(txn: KvTxn, key: bytes, value: bytes) -> None:
    """Drop what an encrypted event opened to here, or its note that it waits for a room key:
    a removed (recalled, SPEC §31.1) body leaves nothing readable at rest."""
    if forget_plaintext_txn(txn, value[:ID_BYTES]):
        return  # it opened, so it waited for no key
    envelope = decode_envelope_at(Table.HISTORY, key, value[ID_BYTES:])
    if envelope.content_type != ENCRYPTED_CONTENT_TYPE:
        return
    try:
        session_id = decode_encrypted_body(envelope.body).session_id
    except RemoteProtocolError:
        return  # never held: a body that does not parse was refused before it was stored
    unhold_txn(txn, session_id, envelope.message_id)


def sender_events_txn(
    txn: KvTxn, room: bytes, sender_device: bytes, first_seq: int, last_seq: int
) -> list[StoredEvent]:
    """The events of `sender_device` in `room` numbered `first_seq..last_seq`, in seq order.

    Numbers not stored are skipped.

    Raises:
        LocalProtocolError: an empty range, or one wider than MAX_SENDER_RANGE.
    """
    if not 1 <= first_seq <= last_seq < first_seq + MAX_SENDER_RANGE:
        raise LocalProtocolError(f"sender range {first_seq}..{last_seq} (1..{MAX_SENDER_RANGE})")
    start = sender_seq_key(room, sender_device, first_seq)
    end = sender_seq_key(room, sender_device, last_seq + 1)
    events = []
    for key, hlc in txn.scan(Table.BY_SENDER, start, end):
        seq = unpack_u64(key[-SEQ_BYTES:])
        at = history_key(room, hlc, sender_device, seq)
        value = txn.get(Table.HISTORY, at)
        if value is None:
            raise corrupt(Table.BY_SENDER, key, "points at a missing history entry")
        events.append(stored_event(txn, at, value))
    return events


def _by_sender(key: bytes) -> tuple[bytes, bytes]:
    """(by-sender key, hlc) of the event under the history key `key`."""
    room, rest = decode_slot(key)
    hlc, device = rest[:TIMESTAMP_BYTES], rest[TIMESTAMP_BYTES : TIMESTAMP_BYTES + ID_BYTES]
    return sender_seq_key(room, device, unpack_u64(rest[-SEQ_BYTES:])), hlc


def _unindex_sender_txn(txn: KvTxn, key: bytes) -> None:
    """Drop the by-sender entry of the history key `key`, if it names this very event."""
    by_sender, hlc = _by_sender(key)
    if txn.get(Table.BY_SENDER, by_sender) == hlc:
        txn.delete(Table.BY_SENDER, by_sender)
        sequences.note_removed_txn(txn, by_sender[:-SEQ_BYTES], unpack_u64(by_sender[-SEQ_BYTES:]))


def fill_sender_index_txn(txn: KvTxn) -> int:
    """Index every stored event by sender, once, for a store written before the index existed.

    Every append writes both, so an empty index beside a non-empty history means exactly that.
    Returns how many events were indexed.
    """
    if next(txn.scan(Table.BY_SENDER, b"", KEY_END), None) is not None:
        return 0
    entries = [_by_sender(key) for key, _ in txn.scan(Table.HISTORY, b"", KEY_END)]
    for by_sender, hlc in entries:  # written after the scan: never mutate under a cursor
        txn.insert(Table.BY_SENDER, by_sender, hlc)
    return len(entries)
