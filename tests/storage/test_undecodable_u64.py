"""A stored u64 of the wrong length is that row unreadable (`UnreadableItem`), never a
`struct.error`: a handler takes the latter for bad input and charges the peer whose message
met our own damaged row (SPEC §11.8.7). One row per read of a stored u64, on real LMDB."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hearthmesh.protocol.errors import UnreadableItem
from hearthmesh.storage import absent
from hearthmesh.storage.api import AppendRequest
from hearthmesh.storage.directory import release_progress_key
from hearthmesh.storage.keys import (
    Table,
    absent_by_room_key,
    absent_key,
    crypto_pair_key,
    media_ref_key,
    outbox_message_key,
    relay_id_key,
)
from hearthmesh.storage.kv import KvTxn
from hearthmesh.storage.store import KvStore

from .conftest import open_store
from .helpers import PEER, ROOM_A, USER_A, USER_B, make_envelope

DEVICE = b"\x0d" * 32
SESSION = b"\x05" * 32
DIGEST = b"\xd1" * 32
MESSAGE = b"\x0e" * 32
DAMAGED = b"\x01\x02\x03"
"""Three bytes where a u64 (eight) was written: a torn or damaged row."""


@dataclass(frozen=True)
class Row:
    table: Table
    key: bytes
    value: bytes
    read: Callable[[KvStore], object]


ORIGINAL = make_envelope(body=b"secret")


def _recall_purge(store: KvStore) -> object:
    """A recall's purge reads the sender device's release progress (actions.py)."""
    store.append(AppendRequest(envelope=ORIGINAL))
    return store.withdraw(ORIGINAL.message_id, b"\x01" * 32, USER_A)


def _pending_with_damaged_marker(txn: KvTxn) -> bool:
    txn.put(Table.OUTBOX_ABSENT, absent_key(PEER, ROOM_A, DEVICE, 1), DAMAGED)
    return absent.pending_txn(txn, ROOM_A, DEVICE, 3)


ROWS = {
    "absent markers": Row(
        Table.OUTBOX_ABSENT,
        absent_key(PEER, ROOM_A, DEVICE, 1),
        DAMAGED,
        lambda store: store.absent_markers(PEER),
    ),
    "absent mark": Row(
        Table.OUTBOX_ABSENT,
        absent_key(PEER, ROOM_A, DEVICE, 1),
        DAMAGED,
        lambda store: store._engine.write(
            lambda txn: absent.mark_txn(txn, PEER, ROOM_A, DEVICE, 5)
        ),
    ),
    # The index row alone is rebuilt from its marker (test_absent_repair.py); not both.
    "absent pending, marker damaged too": Row(
        Table.OUTBOX_ABSENT_BY_ROOM,
        absent_by_room_key(ROOM_A, DEVICE, 1, PEER),
        DAMAGED,
        lambda store: store._engine.write(_pending_with_damaged_marker),
    ),
    "release progress": Row(
        Table.SYNC,
        release_progress_key(ROOM_A, DEVICE),
        DAMAGED,
        lambda store: store.release_progress(ROOM_A, DEVICE),
    ),
    "recall purge": Row(
        Table.SYNC, release_progress_key(ROOM_A, ORIGINAL.sender_device), DAMAGED, _recall_purge
    ),
    "e2ee shared index": Row(
        Table.E2EE_SHARED,
        crypto_pair_key(ROOM_A, SESSION) + DEVICE,
        USER_B + DAMAGED,
        lambda store: store.first_index_given(ROOM_A, SESSION, USER_B),
    ),
    "e2ee owed index": Row(
        Table.E2EE_OWED,
        crypto_pair_key(ROOM_A, SESSION) + USER_B,
        DAMAGED,
        lambda store: store.first_index_given(ROOM_A, SESSION, USER_B),
    ),
    "e2ee owed users": Row(
        Table.E2EE_OWED,
        crypto_pair_key(ROOM_A, SESSION) + USER_B,
        DAMAGED,
        lambda store: store.owed_users(ROOM_A, SESSION),
    ),
    "media reference": Row(
        Table.MEDIA_REFS,
        media_ref_key(DIGEST, ROOM_A, USER_B, MESSAGE),
        DAMAGED,
        lambda store: store.media_references(DIGEST),
    ),
    "outbox ack": Row(
        Table.OUTBOX_BY_MESSAGE,
        outbox_message_key(MESSAGE, PEER),
        DAMAGED,
        lambda store: store.ack_many(PEER, [MESSAGE]),
    ),
    "relay ack": Row(
        Table.RELAY_IDS,
        relay_id_key(USER_B, MESSAGE),
        DAMAGED,
        lambda store: store.relay_ack(USER_B, [MESSAGE]),
    ),
}


@pytest.fixture
def lmdb(tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store("lmdb", tmp_path)
    yield opened
    opened.close()


@pytest.mark.parametrize("name", ROWS)
def test_a_stored_u64_of_the_wrong_length_is_that_row_unreadable(lmdb: KvStore, name: str) -> None:
    row = ROWS[name]
    lmdb._engine.write(lambda txn: txn.put(row.table, row.key, row.value))
    with pytest.raises(UnreadableItem):
        row.read(lmdb)
