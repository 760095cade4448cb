"""What only the LMDB store has: a path, a schema, map growth, damage on disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import lmdb
import pytest

from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, MediaRef, encode_media
from hearthmesh.protocol.errors import StorageError
from hearthmesh.storage.api import AppendRequest, AppendResult, Direction
from hearthmesh.storage.directory import setting_key
from hearthmesh.storage.keys import SCHEMA_KEY, Table, pack_u32
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.media_refs import MEDIA_REFS_FILLED_SETTING

from .helpers import ROOM_A, ROOM_B, make_envelope


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    env = make_envelope()
    with LmdbStore(tmp_path / "db") as store:
        store.append(AppendRequest(envelope=env, outbox_to=(b"peer",)))
        info = store.put_media(b"blob", content_type="text/plain", now_ms=1)
    with LmdbStore(tmp_path / "db") as store:
        stored = store.get_event(env.message_id)
        assert stored is not None and stored.envelope.wire == env.wire
        assert [e.message_id for e in store.take_due(now_ms=0, limit=5, lease_ms=1)] == [
            env.message_id
        ]
        assert store.read_media(info.digest) == b"blob"
    assert (tmp_path / "db" / "media").is_dir()


def test_map_grows_instead_of_failing(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db", map_size=64 * 1024) as store:
        start = store.map_size
        envelopes = [make_envelope(seq=i, wall_ms=i, body=bytes(2_000)) for i in range(1, 201)]
        for i in range(0, 200, 50):
            batch = [AppendRequest(envelope=e) for e in envelopes[i : i + 50]]
            assert store.append_many(batch) == [AppendResult.STORED] * 50
        assert store.map_size > start
        page = store.page_history(ROOM_A, direction=Direction.FORWARD, limit=1000)
        assert len(page.events) == 200


def test_a_map_growth_waits_for_an_open_snapshot_and_goes_on_once_it_closes(
    tmp_path: Path,
) -> None:
    with LmdbStore(tmp_path / "db", map_size=64 * 1024) as store:
        first = make_envelope(seq=1)
        store.append(AppendRequest(envelope=first))
        opened, close = threading.Event(), threading.Event()

        read: list[bytes | None] = []
        grown: list[int] = []

        def read_across_the_growth() -> None:
            opened.set()
            close.wait(10)
            stored = store.get_event(first.message_id)  # the snapshot is still good
            read.append(None if stored is None else stored.envelope.wire)

        def grow() -> None:
            for i in range(2, 200):
                store.append(AppendRequest(envelope=make_envelope(seq=i, body=bytes(2_000))))
            grown.append(store.map_size)

        gate = store._engine._gate  # type: ignore[attr-defined]
        # daemons: a growth that is never let go must fail the test, not hang its end
        reader = threading.Thread(target=store.snapshot, args=(read_across_the_growth,))
        writer = threading.Thread(target=grow, daemon=True)
        reader.daemon = True
        reader.start()
        assert opened.wait(10)
        writer.start()
        deadline = time.monotonic() + 20
        while not gate._resizing:  # the growth waits for the snapshot to close
            assert time.monotonic() < deadline and writer.is_alive()
            time.sleep(0.001)
        close.set()
        reader.join(10)
        assert read == [first.wire]
        writer.join(20)
        assert grown and grown[0] > 64 * 1024  # the snapshot's close let the growth go on


def test_opening_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db"), pytest.raises(StorageError, match="already open"):
        LmdbStore(tmp_path / "db")
    LmdbStore(tmp_path / "db").close()  # closing released the path


def test_a_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"hello")
    with pytest.raises(StorageError, match=str(path)):
        LmdbStore(path)


def test_a_directory_of_other_files_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match=str(tmp_path)):
        LmdbStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_garbage_data_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"\x13" * 20_000)
    with pytest.raises(StorageError, match=str(path)):
        LmdbStore(path)


def test_another_lmdb_environment_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "db"
    env = lmdb.open(str(path), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v", db=env.open_db(b"something.else", txn=txn))
    env.close()
    with pytest.raises(StorageError, match=f"{path} is an LMDB environment but not a hearthmesh"):
        LmdbStore(path)


def test_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "db"
    LmdbStore(path).close()
    env = lmdb.open(str(path), max_dbs=len(Table))
    with env.begin(write=True) as txn:
        txn.put(SCHEMA_KEY, pack_u32(2), db=env.open_db(Table.SCHEMA.value, txn=txn))
    env.close()
    with pytest.raises(StorageError, match=f"{path} has schema version 2"):
        LmdbStore(path)


def test_a_store_from_before_the_by_sender_index_is_indexed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "db"
    events = [make_envelope(seq=seq, wall_ms=100 - seq) for seq in (1, 2, 3)]
    with LmdbStore(path) as store:
        store.append_many([AppendRequest(envelope=e) for e in events])
    env = lmdb.open(str(path), max_dbs=len(Table))
    with env.begin(write=True) as txn:  # as an older build left it: history, no index
        txn.drop(env.open_db(Table.BY_SENDER.value, txn=txn), delete=False)
    env.close()
    with LmdbStore(path) as store:
        found = store.sender_events(ROOM_A, events[0].sender_device, 1, 3)
        assert [e.envelope.message_id for e in found] == [e.message_id for e in events]


def test_a_store_from_before_the_media_index_is_indexed_once_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "db"
    picture = MediaRef(type="image", digest=b"\x01" * 32, content_type="image/png", size=7)
    shared = make_envelope(body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE)
    with LmdbStore(path) as store:
        store.append_many(
            [AppendRequest(envelope=shared), AppendRequest(envelope=make_envelope(seq=2))]
        )
    env = lmdb.open(str(path), max_dbs=len(Table))
    with env.begin(write=True) as txn:  # as an older build left it: history, no media index
        txn.drop(env.open_db(Table.MEDIA_REFS.value, txn=txn), delete=False)
        settings = env.open_db(Table.SETTINGS.value, txn=txn)
        assert txn.delete(setting_key(MEDIA_REFS_FILLED_SETTING), db=settings)
    env.close()
    with LmdbStore(path) as store:
        [found] = store.media_references(picture.digest)
        assert (found.room, found.size, found.content_type) == (ROOM_A, 7, "image/png")
        assert store.get_setting(MEDIA_REFS_FILLED_SETTING) == b"1"  # never scanned again


def test_the_earlier_media_index_is_replaced_by_one_entry_per_message(tmp_path: Path) -> None:
    path = tmp_path / "db"
    picture = MediaRef(type="image", digest=b"\x01" * 32, content_type="image/png", size=7)
    kept = make_envelope(body=encode_media(picture), content_type=MEDIA_CONTENT_TYPE)
    with LmdbStore(path) as store:
        store.append(AppendRequest(envelope=kept))
    env = lmdb.open(str(path), max_dbs=len(Table))
    with env.begin(write=True) as txn:  # as an older build left it: digest | room | sender
        refs = env.open_db(Table.MEDIA_REFS.value, txn=txn)
        txn.drop(refs, delete=False)
        stale = picture.digest + ROOM_B + kept.sender_user  # its message was purged long ago
        txn.put(stale, b"\x00" * 8 + b"image/png", db=refs)
        settings = env.open_db(Table.SETTINGS.value, txn=txn)
        assert txn.delete(setting_key(MEDIA_REFS_FILLED_SETTING), db=settings)
        txn.put(setting_key("storage.media_refs_filled"), b"1", db=settings)
    env.close()
    with LmdbStore(path) as store:
        assert [r.room for r in store.media_references(picture.digest)] == [ROOM_A]
        assert store.get_setting("storage.media_refs_filled") is None
        assert store.get_setting(MEDIA_REFS_FILLED_SETTING) == b"1"


def test_an_undecodable_value_names_its_key_and_the_rest_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    good, bad = make_envelope(ROOM_A), make_envelope(ROOM_B)
    with LmdbStore(path) as store:
        store.append_many([AppendRequest(envelope=good), AppendRequest(envelope=bad)])
        bad_cursor = store.get_event(bad.message_id)
        assert bad_cursor is not None
    bad_key = ROOM_B + bad_cursor.cursor
    env = lmdb.open(str(path), max_dbs=len(Table))
    with env.begin(write=True) as txn:
        txn.put(
            bad_key, bad.message_id + b"\xff garbage", db=env.open_db(Table.HISTORY.value, txn=txn)
        )
    env.close()
    with LmdbStore(path) as store:
        with pytest.raises(StorageError, match=f"history.events at key {bad_key.hex()}"):
            store.get_event(bad.message_id)
        with pytest.raises(StorageError, match=bad_key.hex()):
            store.page_history(ROOM_B, direction=Direction.BACKWARD)
        page = store.page_history(ROOM_A, direction=Direction.BACKWARD)
        assert [e.envelope.message_id for e in page.events] == [good.message_id]
        assert store.get_event(good.message_id) is not None


def test_a_damaged_media_blob_is_reported(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as store:
        info = store.put_media(b"original", content_type="text/plain", now_ms=1)
        blob = tmp_path / "db" / "media" / info.digest.hex()[:2] / info.digest.hex()
        blob.write_bytes(b"tampered")
        with pytest.raises(StorageError, match=str(blob)):
            store.read_media(info.digest)


def test_an_open_reader_does_not_block_the_writer(tmp_path: Path) -> None:
    import threading

    from hearthmesh.storage.keys import Table as T
    from hearthmesh.storage.lmdb_store import LmdbEngine

    engine = LmdbEngine(tmp_path / "db")
    opened, release = threading.Event(), threading.Event()
    seen: list[bytes | None] = []

    def reader() -> None:
        with engine.read() as txn:
            opened.set()
            release.wait(10)
            seen.append(txn.get(T.SETTINGS, b"k"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert opened.wait(10)
        engine.write(lambda txn: txn.put(T.SETTINGS, b"k", b"v"))  # commits with the reader open
        with engine.read() as txn:
            assert txn.get(T.SETTINGS, b"k") == b"v"
    finally:
        release.set()
        thread.join(10)
        engine.close()
    assert seen == [None]  # the reader kept its snapshot
