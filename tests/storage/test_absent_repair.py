"""A damaged `outbox.absent_by_room` row is rebuilt from the marker it mirrors (SPEC §11.8.7),
on real LMDB: the index is derived, so it is not contained as an unreadable item that would
stop every purge, and the events the marker owes are still kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.storage.api import AppendRequest
from hearthmesh.storage.keys import Table, absent_by_room_key, absent_key, pack_u64
from hearthmesh.storage.kv import KvTxn
from hearthmesh.storage.store import KvStore

from .conftest import open_store
from .helpers import ROOM_A, make_envelope

ABSENT = b"absent-user-home"
SENDER = make_envelope().sender_device
INDEX = absent_by_room_key(ROOM_A, SENDER, 1, ABSENT)
MARKER = absent_key(ABSENT, ROOM_A, SENDER, 1)


@pytest.fixture
def lmdb(tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store("lmdb", tmp_path)
    yield opened
    opened.close()


def _owe_three(store: KvStore) -> None:
    for seq in (1, 2, 3):
        envelope = make_envelope(seq=seq, wall_ms=1_000 + seq, body=f"m{seq}".encode())
        store.append(AppendRequest(envelope=envelope, absent_to=(ABSENT,)))


def _row(store: KvStore, table: Table, key: bytes) -> bytes | None:
    with store._engine.read() as txn:
        return txn.get(table, key)


def test_a_damaged_index_row_is_rebuilt_from_its_marker_and_the_owed_events_kept(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    _owe_three(lmdb)
    assert _row(lmdb, Table.OUTBOX_ABSENT_BY_ROOM, INDEX) == pack_u64(3)
    lmdb._engine.write(lambda txn: txn.put(Table.OUTBOX_ABSENT_BY_ROOM, INDEX, b"\x01\x02"))
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        report = lmdb.purge(now_ms=1_000_000, retention_ms=1)
        again = lmdb.purge(now_ms=1_000_000, retention_ms=1)
    assert (report.events, report.kept_for_outbox) == (0, 3)
    assert (again.events, again.kept_for_outbox) == (0, 3)
    assert _row(lmdb, Table.OUTBOX_ABSENT_BY_ROOM, INDEX) == pack_u64(3)
    assert len(lmdb.sender_events(ROOM_A, SENDER, 1, 3)) == 3
    repairs = [r for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(repairs) == 1 and "outbox.absent_by_room" in repairs[0].getMessage()


def test_a_damaged_index_row_with_no_marker_is_dropped_and_owes_nothing(lmdb: KvStore) -> None:
    _owe_three(lmdb)

    def damage(txn: KvTxn) -> None:
        txn.delete(Table.OUTBOX_ABSENT, MARKER)
        txn.put(Table.OUTBOX_ABSENT_BY_ROOM, INDEX, b"\x01")

    lmdb._engine.write(damage)
    report = lmdb.purge(now_ms=1_000_000, retention_ms=1)
    assert (report.events, report.kept_for_outbox) == (3, 0)
    assert _row(lmdb, Table.OUTBOX_ABSENT_BY_ROOM, INDEX) is None
