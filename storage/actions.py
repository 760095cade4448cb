"""Message actions in the store (SPEC §31, `_txn` helpers): the index of actions per message,
recall tombstones and the purge of a recalled body, and messages hidden for one user.

A recalled message's history entry (its body) is removed as soon as nothing here still needs
it: no outbox entry is waiting to deliver it (a home that never got it would otherwise wait
behind its sequence number forever, SPEC §26.1) and its sender's release order here has passed
it (a later number is read back from the store, SPEC §8.4). Until then only views hide it; the
ack of its last outbox entry removes it (`purge_delivered_withdrawn_txn`), or else the purge
pass. The tombstone stays, so a copy arriving later (sync, gap fetch, a retry) is answered as
a duplicate and never stored again: its id stays in `history.ids` (as WITHDRAWN_SLOT), so an
append pays nothing for this. A copy that arrives before the sender's
recall is checked (the recall came first) is stored, and the purge pass removes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from hearthmesh.protocol.envelope import Kind, MessageId
from hearthmesh.protocol.identity import UserId

from . import absent
from .api import StoredEvent
from .history import get_event_txn, withdraw_event_txn
from .keys import ID_BYTES, Table, prefix_end, release_key
from .kv import KvTxn
from .media_refs import forget_media_txn
from .records import decode_u64_at

__all__ = [
    "actions_of_txn",
    "hidden_txn",
    "hide_txn",
    "index_action_txn",
    "purge_delivered_withdrawn_txn",
    "purge_withdrawn_txn",
    "withdraw_txn",
    "withdrawn_by_txn",
]


def index_action_txn(txn: KvTxn, target: bytes, action: bytes) -> None:
    """Note that the stored event `action` names `target`."""
    txn.put(Table.ACTIONS, target + action, b"")


def actions_of_txn(txn: KvTxn, target: bytes) -> list[StoredEvent]:
    """The stored actions that name `target` (any order; the fold does not care)."""
    found = []
    for key, _ in txn.scan(Table.ACTIONS, target, prefix_end(target)):
        event = get_event_txn(txn, key[ID_BYTES:])
        if event is not None:  # purged by retention meanwhile
            found.append(event)
    return found


def withdrawn_by_txn(txn: KvTxn, target: bytes) -> UserId | None:
    """The user who recalled `target` here, if anyone did."""
    value = txn.get(Table.WITHDRAWN, target)
    return None if value is None else UserId(value[ID_BYTES:])


def withdraw_txn(txn: KvTxn, target: bytes, recall: bytes, sender: bytes) -> bool:
    """Record `sender`'s recall of `target` and purge the body if nothing needs it now.

    A recall of a held message by someone else records nothing; one of a message not here yet
    never replaces an earlier record (which of them is its sender's is known only once the
    message comes: the purge then looks for its sender's recall). Returns True if the body was
    removed now (SPEC §31.1)."""
    held = get_event_txn(txn, target)
    if held is None:
        txn.insert(Table.WITHDRAWN, target, recall + sender)
        return False
    if held.envelope.sender_user != sender:
        return False  # the fold ignores it too
    txn.put(Table.WITHDRAWN, target, recall + sender)
    return _purge_if_unneeded_txn(txn, MessageId(target), UserId(sender))


def purge_withdrawn_txn(txn: KvTxn, limit: int) -> int:
    """Remove the bodies of up to `limit` recalled messages still held; returns how many."""
    pending = [
        (MessageId(target), UserId(value[ID_BYTES:]))
        for target, value in txn.scan(Table.WITHDRAWN, b"", b"\xff" * ID_BYTES)
        if txn.get(Table.MESSAGE_IDS, target)  # held: neither unknown nor WITHDRAWN_SLOT
    ][:limit]
    return sum(_purge_if_unneeded_txn(txn, target, sender) for target, sender in pending)


def purge_delivered_withdrawn_txn(txn: KvTxn, message_ids: Iterable[bytes]) -> int:
    """After deliveries were acked: remove the bodies of those of `message_ids` that were
    recalled and waited only for their delivery, now rather than at the next purge pass
    (which may be a minute away); returns how many were removed."""
    removed = 0
    for target in message_ids:
        value = txn.get(Table.WITHDRAWN, target)
        if value is not None:
            removed += _purge_if_unneeded_txn(txn, MessageId(target), UserId(value[ID_BYTES:]))
    return removed


def _purge_if_unneeded_txn(txn: KvTxn, target: MessageId, sender: UserId) -> bool:
    held = get_event_txn(txn, target)
    if held is None:
        return False
    envelope = held.envelope
    if envelope.sender_user != sender:  # recorded before the message came: a forgery?
        recall = _recall_by_txn(txn, target, envelope.sender_user)
        if recall is None:
            return False  # a recall by someone else changes nothing (the fold ignores it too)
        txn.put(Table.WITHDRAWN, target, recall + envelope.sender_user)
    for _ in txn.scan(Table.OUTBOX_BY_MESSAGE, target, prefix_end(target)):
        return False  # still to be delivered somewhere
    if absent.pending_txn(txn, envelope.room, envelope.sender_device, envelope.seq):
        return False  # owed to a user whose home no record names yet (SPEC §11.5.2)
    # No progress saved: our own device's sends, which no release order here holds back.
    at = release_key(envelope.room, envelope.sender_device)
    progress = txn.get(Table.SYNC, at)
    if progress is not None and decode_u64_at(Table.SYNC, at, progress) <= envelope.seq:
        return False  # not released here yet: later numbers are read back behind it
    withdraw_event_txn(txn, held, on_removed=forget_media_txn)
    return True


def _recall_by_txn(txn: KvTxn, target: bytes, sender: bytes) -> bytes | None:
    """The id of a stored RECALL of `target` by `sender`, read from headers of the index."""
    for key, _ in txn.scan(Table.ACTIONS, target, prefix_end(target)):
        event = get_event_txn(txn, key[ID_BYTES:])
        envelope = None if event is None else event.envelope
        if envelope is not None and envelope.kind is Kind.RECALL and envelope.sender_user == sender:
            return envelope.message_id
    return None


def hide_txn(txn: KvTxn, user: bytes, message: bytes) -> bool:
    """Hide `message` from `user`'s views; False if it was hidden already."""
    return txn.insert(Table.HIDDEN, user + message, b"")


def hidden_txn(txn: KvTxn, user: bytes, messages: Iterable[bytes]) -> set[MessageId]:
    """Which of `messages` `user` hid."""
    return {MessageId(m) for m in messages if txn.get(Table.HIDDEN, user + m) is not None}
