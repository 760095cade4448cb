"""A damaged `outbox.absent_by_room` row is rebuilt from the marker it mirrors, and a damaged or
missing `outbox.absent` marker from its index row (SPEC §11.8.7), on real LMDB: each mirrors
the other, so neither is contained as an unreadable item that would stop every purge or every
send to the room, and the events a marker owes are still kept and still sent."""

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


def _owe(store: KvStore, *seqs: int) -> None:
    for seq in seqs:
        envelope = make_envelope(seq=seq, wall_ms=1_000 + seq, body=f"m{seq}".encode())
        store.append(AppendRequest(envelope=envelope, absent_to=(ABSENT,)))


def _owe_three(store: KvStore) -> None:
    _owe(store, 1, 2, 3)


def _repairs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]


def _sent_on_probe(store: KvStore) -> int:
    """How many parked entries the user's probe makes of its markers (and puts back in queue)."""
    return store.unpark(ABSENT, now_ms=10**9, limit=100)


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


def test_a_damaged_marker_is_rebuilt_from_its_index_row_by_the_next_send_and_logged_once(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    _owe_three(lmdb)
    lmdb._engine.write(lambda txn: txn.put(Table.OUTBOX_ABSENT, MARKER, b"\x01\x02"))
    # a read answers from the index row and writes nothing
    assert lmdb.absent_markers(ABSENT) == [(ROOM_A, SENDER, 1, 3)]
    assert _row(lmdb, Table.OUTBOX_ABSENT, MARKER) == b"\x01\x02"
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        _owe(lmdb, 4, 5)  # the next sends to the room meet it: the run grows from it
    assert lmdb.absent_markers(ABSENT) == [(ROOM_A, SENDER, 1, 5)]
    assert _row(lmdb, Table.OUTBOX_ABSENT, MARKER) == pack_u64(5)
    repairs = _repairs(caplog)
    assert len(repairs) == 1 and "outbox.absent/" in repairs[0]
    assert _sent_on_probe(lmdb) == 5


def test_a_damaged_marker_met_by_the_users_probe_still_sends_all_it_owes(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    _owe_three(lmdb)
    lmdb._engine.write(lambda txn: txn.put(Table.OUTBOX_ABSENT, MARKER, b"\x01"))
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        assert _sent_on_probe(lmdb) == 3
    assert len(_repairs(caplog)) == 1
    assert lmdb.absent_markers(ABSENT) == []
    assert _row(lmdb, Table.OUTBOX_ABSENT_BY_ROOM, INDEX) is None


def test_a_missing_marker_is_written_again_from_its_index_row_where_a_purge_meets_it(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    _owe_three(lmdb)
    lmdb._engine.write(lambda txn: txn.delete(Table.OUTBOX_ABSENT, MARKER))
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        report = lmdb.purge(now_ms=1_000_000, retention_ms=1)
        again = lmdb.purge(now_ms=1_000_000, retention_ms=1)
    assert (report.events, report.kept_for_outbox) == (0, 3)
    assert (again.events, again.kept_for_outbox) == (0, 3)
    repairs = _repairs(caplog)
    assert len(repairs) == 1 and "outbox.absent/" in repairs[0] and "missing" in repairs[0]
    # the user is probed again and sent what it is owed
    assert lmdb.parked_destinations() == [ABSENT]
    assert _sent_on_probe(lmdb) == 3


def test_a_missing_index_row_is_written_again_from_its_marker_at_open_and_the_events_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A purge finds what a marker owes through its index row only: with the row gone, the
    owed events were purged and the user's probe sent none of them (the next send to the room
    rewrote the row, if one came). The store writes the row again from its marker at open."""
    store = open_store("lmdb", tmp_path)
    _owe_three(store)
    store._engine.write(lambda txn: txn.delete(Table.OUTBOX_ABSENT_BY_ROOM, INDEX))
    store.close()
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        store = open_store("lmdb", tmp_path)
    try:
        repairs = _repairs(caplog)
        assert len(repairs) == 1 and "outbox.absent_by_room/" in repairs[0]
        assert "missing" in repairs[0]
        assert _row(store, Table.OUTBOX_ABSENT_BY_ROOM, INDEX) == pack_u64(3)
        report = store.purge(now_ms=1_000_000, retention_ms=1)
        assert (report.events, report.kept_for_outbox) == (0, 3)
        assert _sent_on_probe(store) == 3
    finally:
        store.close()
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.absent"):
        open_store("lmdb", tmp_path).close()  # whole again: nothing to write, nothing logged
    assert len(_repairs(caplog)) == 1
