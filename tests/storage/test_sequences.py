"""A damaged highest-sequence row (`history.sequences`) is rebuilt from its sources, not
contained for good (SPEC §11.8.7), on real LMDB: the row is derived from `history.by_sender`;
a store written before the floors existed seeds them once at open."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.storage.api import AppendRequest, AppendResult
from hearthmesh.storage.keys import KEY_END, Table, pack_u64, sequence_key
from hearthmesh.storage.kv import KvTxn
from hearthmesh.storage.sequences import SEQUENCE_FLOORS_FILLED_SETTING
from hearthmesh.storage.store import KvStore

from .conftest import open_store
from .helpers import ROOM_A, ROOM_B, make_envelope

SENDER = make_envelope().sender_device
ROW = sequence_key(ROOM_A, SENDER)


@pytest.fixture
def lmdb(tmp_path: Path) -> Iterator[KvStore]:
    opened = open_store("lmdb", tmp_path)
    yield opened
    opened.close()


def _append(store: KvStore, seq: int) -> AppendResult:
    envelope = make_envelope(seq=seq, wall_ms=1_000 + seq, body=f"m{seq}".encode())
    return store.append(AppendRequest(envelope=envelope))


def _damage(store: KvStore) -> None:
    store._engine.write(lambda txn: txn.put(Table.SEQUENCES, ROW, b"\x01\x02\x03"))


def _row(store: KvStore) -> bytes | None:
    with store._engine.read() as txn:
        return txn.get(Table.SEQUENCES, ROW)


def test_a_damaged_row_is_rebuilt_by_the_next_append_and_logged_once(
    lmdb: KvStore, caplog: pytest.LogCaptureFixture
) -> None:
    for seq in (1, 2, 3):
        assert _append(lmdb, seq) is AppendResult.STORED
    _damage(lmdb)
    assert lmdb.last_seq(ROOM_A, SENDER) == 3  # answered from by_sender, not unreadable
    with caplog.at_level(logging.WARNING, logger="hearthmesh.storage.sequences"):
        assert _append(lmdb, 4) is AppendResult.STORED
        assert _append(lmdb, 5) is AppendResult.STORED
    assert _row(lmdb) == pack_u64(5)  # whole again, and raised as before
    assert lmdb.last_seq(ROOM_A, SENDER) == 5
    repairs = [r for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(repairs) == 1 and "history.sequences" in repairs[0].getMessage()


def test_a_rebuilt_row_keeps_numbers_released_before_a_purge(lmdb: KvStore) -> None:
    """A recall took the newest event out of `by_sender`; its number was released to the app,
    so the rebuilt row does not give it again."""
    for seq in (1, 2, 3):
        _append(lmdb, seq)
    newest = make_envelope(seq=3, wall_ms=1_003, body=b"m3")
    lmdb.set_release_progress(ROOM_A, SENDER, 4)
    assert lmdb.withdraw(newest.message_id, b"\x01" * 32, newest.sender_user)
    assert lmdb.sender_events(ROOM_A, SENDER, 3, 3) == []  # gone from by_sender
    _damage(lmdb)
    assert lmdb.last_seq(ROOM_A, SENDER) == 3
    assert _append(lmdb, 4) is AppendResult.STORED
    assert _row(lmdb) == pack_u64(4)


def test_a_damaged_row_of_a_sender_with_nothing_stored_reads_zero(lmdb: KvStore) -> None:
    _damage(lmdb)
    assert lmdb.last_seq(ROOM_A, SENDER) == 0
    assert _append(lmdb, 1) is AppendResult.STORED
    assert _row(lmdb) == pack_u64(1)


def test_a_rebuilt_row_never_gives_again_a_number_a_recall_took_without_progress(
    lmdb: KvStore,
) -> None:
    """Our own device keeps no release progress: the floor a removal writes is what keeps the
    recalled newest number from being given again (a reused (sender, seq) is a CONFLICT)."""
    for seq in (1, 2, 3):
        _append(lmdb, seq)
    newest = make_envelope(seq=3, wall_ms=1_003, body=b"m3")
    assert lmdb.withdraw(newest.message_id, b"\x01" * 32, newest.sender_user)
    _damage(lmdb)
    assert lmdb.last_seq(ROOM_A, SENDER) == 3  # not 2: the next send takes 4
    assert _append(lmdb, 4) is AppendResult.STORED
    assert _row(lmdb) == pack_u64(4)


def test_a_rebuilt_row_never_gives_again_a_number_a_purge_took(lmdb: KvStore) -> None:
    for seq in (1, 2, 3):
        _append(lmdb, seq)
    report = lmdb.purge(now_ms=1_000_000, retention_ms=1)
    assert report.events == 3 and lmdb.sender_events(ROOM_A, SENDER, 1, 3) == []
    _damage(lmdb)
    assert lmdb.last_seq(ROOM_A, SENDER) == 3
    assert _append(lmdb, 4) is AppendResult.STORED
    assert _row(lmdb) == pack_u64(4)


def test_a_damaged_floor_is_replaced_by_the_next_removal(lmdb: KvStore) -> None:
    for seq in (1, 2):
        _append(lmdb, seq)
    lmdb._engine.write(lambda txn: txn.put(Table.SEQUENCE_FLOORS, ROW, b"\x09"))
    newest = make_envelope(seq=2, wall_ms=1_002, body=b"m2")
    assert lmdb.withdraw(newest.message_id, b"\x01" * 32, newest.sender_user)
    with lmdb._engine.read() as txn:
        assert txn.get(Table.SEQUENCE_FLOORS, ROW) == pack_u64(2)


def _as_written_before_floors(txn: KvTxn) -> None:
    """What a store written before floors existed holds: no floor, no mark that they were
    seeded."""
    for row in [key for key, _ in txn.scan(Table.SEQUENCE_FLOORS, b"", KEY_END)]:
        txn.delete(Table.SEQUENCE_FLOORS, row)
    txn.delete(Table.SETTINGS, SEQUENCE_FLOORS_FILLED_SETTING.encode())


def test_an_old_store_seeds_its_floors_once_at_open_from_its_rows(tmp_path: Path) -> None:
    """A purge made before floors existed raised none: the open after seeds the floor from the
    row, so a later rebuild still never gives the purged numbers again."""
    store = open_store("lmdb", tmp_path)
    for seq in (1, 2, 3):
        _append(store, seq)
    assert store.purge(now_ms=1_000_000, retention_ms=1).events == 3
    other = make_envelope(ROOM_B, seq=5, wall_ms=1_005)  # nothing removed: no floor to seed
    store.append(AppendRequest(envelope=other))
    store._engine.write(_as_written_before_floors)
    store.close()
    store = open_store("lmdb", tmp_path)
    try:
        _damage(store)
        assert store.last_seq(ROOM_A, SENDER) == 3  # not 0: the purged numbers stay taken
        assert _append(store, 4) is AppendResult.STORED
        assert _row(store) == pack_u64(4)
        with store._engine.read() as txn:  # room B's row, with nothing removed, needs none
            assert [k for k, _ in txn.scan(Table.SEQUENCE_FLOORS, b"", KEY_END)] == [ROW]
            # marked done: later opens do not scan the rows again
            assert txn.get(Table.SETTINGS, SEQUENCE_FLOORS_FILLED_SETTING.encode()) == b"1"
    finally:
        store.close()
