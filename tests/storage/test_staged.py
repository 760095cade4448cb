"""Staged write batches: run on the loop's thread over what is committed and staged before,
committed later by the writer thread (storage/staged.py, `AsyncStore`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.errors import LocalProtocolError, StorageError
from hearthmesh.storage.api import AppendRequest, AppendResult
from hearthmesh.storage.async_store import MAX_STAGED, AsyncStore
from hearthmesh.storage.keys import Table
from hearthmesh.storage.kv import KvTxn
from hearthmesh.storage.lmdb_store import LmdbEngine, LmdbStore
from hearthmesh.storage.staged import OverlayTxn, StagedWrites
from tests.conftest import examples

from .conftest import RunOn
from .helpers import kept_busy, make_envelope


def _storage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hearthmesh-store")]


def _committed(store: LmdbStore, name: str) -> bytes | None:
    return store.snapshot(lambda: store.get_setting(name))


def test_a_later_batch_reads_an_earlier_one_before_either_commits(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as store:
        store.set_setting("gone", b"x")
        first, staged_first = store.stage_batch(
            [lambda: store.set_setting("a", b"1"), lambda: store.delete_setting("gone")]
        )
        second, staged_second = store.stage_batch(
            [
                lambda: store.get_setting("a"),
                lambda: store.get_setting("gone"),
                lambda: store.set_setting("a", b"2"),
            ]
        )
        assert staged_first is not None and staged_second is not None
        assert [o.value for o in first] == [None, True]
        assert [o.value for o in second] == [b"1", None, None]
        assert _committed(store, "a") is None  # readers see only what is committed
        assert _committed(store, "gone") == b"x"
        with pytest.raises(LocalProtocolError, match="staged"):
            store.set_setting("b", b"beside")  # would miss the staged batches
        store.commit_staged([staged_first])
        assert (_committed(store, "a"), _committed(store, "gone")) == (b"1", None)
        store.commit_staged([staged_second])
        assert _committed(store, "a") == b"2"
        store.set_setting("b", b"now")  # nothing staged any more
    with LmdbStore(tmp_path / "db") as reopened:
        assert reopened.get_setting("a") == b"2" and reopened.get_setting("b") == b"now"


def test_a_call_that_raises_is_undone_alone_in_a_staged_batch(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as store:

        def half_then_fail() -> None:
            store.set_setting("half", b"h")
            store.set_setting("a", b"overwritten")
            raise ValueError("no")

        outcomes, staged = store.stage_batch(
            [lambda: store.set_setting("a", b"1"), half_then_fail, lambda: store.get_setting("a")]
        )
        assert staged is not None
        assert isinstance(outcomes[1].error, ValueError)
        assert outcomes[2].value == b"1"
        store.commit_staged([staged])
        assert (_committed(store, "a"), _committed(store, "half")) == (b"1", None)


def test_a_commit_that_fills_the_map_grows_it_and_replays(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db", map_size=64 * 1024) as store:
        start = store.map_size
        envelopes = [make_envelope(seq=i, wall_ms=i, body=b"x" * 900) for i in range(1, 200)]
        outcomes, staged = store.stage_batch(
            [lambda: store.append_many([AppendRequest(envelope=e) for e in envelopes])]
        )
        assert staged is not None and len(staged) > 200
        store.commit_staged([staged])
        assert outcomes[0].value == [AppendResult.STORED] * len(envelopes)
        assert store.map_size > start
        assert store.last_seq(envelopes[0].room, envelopes[0].sender_device) == 199


# --- the overlay against a dict model ----------------------------------------------------

_KEYS = st.binary(min_size=1, max_size=2).map(lambda k: b"k" + k)
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "insert", "delete", "discard"]), _KEYS, st.binary(max_size=3)
    ),
    max_size=12,
)


def _apply(txn: KvTxn, model: dict[bytes, bytes], ops: list[tuple[str, bytes, bytes]]) -> None:
    for op, key, value in ops:
        if op == "put":
            txn.put(Table.SETTINGS, key, value)
            model[key] = value
        elif op == "insert":
            assert txn.insert(Table.SETTINGS, key, value) is (key not in model)
            model.setdefault(key, value)
        elif op == "delete":
            assert txn.delete(Table.SETTINGS, key) is (key in model)
            model.pop(key, None)
        else:
            txn.discard(Table.SETTINGS, key)
            model.pop(key, None)


class _Refused(Exception):
    """Makes a nested write roll back."""


@settings(max_examples=examples(60), deadline=None)
@given(
    committed=_OPS,
    below=_OPS,
    here=_OPS,
    nested=_OPS,
    keep_nested=st.booleans(),
    bounds=st.tuples(_KEYS, _KEYS),
)
def test_the_overlay_reads_as_if_every_batch_before_had_committed(
    tmp_path_factory: pytest.TempPathFactory,
    committed: list[tuple[str, bytes, bytes]],
    below: list[tuple[str, bytes, bytes]],
    here: list[tuple[str, bytes, bytes]],
    nested: list[tuple[str, bytes, bytes]],
    keep_nested: bool,
    bounds: tuple[bytes, bytes],
) -> None:
    engine = LmdbEngine(tmp_path_factory.mktemp("overlay"))
    model: dict[bytes, bytes] = {}
    start, end = sorted(bounds)

    def nested_write(txn: KvTxn) -> None:
        trial = dict(model)
        _apply(txn, trial, nested)
        if not keep_nested:
            raise _Refused
        model.update(trial)
        for key in set(model) - set(trial):
            del model[key]

    def staged_here() -> None:
        engine.write(lambda txn: _apply(txn, model, here))
        with contextlib.suppress(_Refused):
            engine.write(nested_write)
        expected = sorted((k, v) for k, v in model.items() if start <= k < end)
        with engine.read() as txn:
            assert list(txn.scan(Table.SETTINGS, start, end)) == expected
            assert list(txn.scan(Table.SETTINGS, start, end, reverse=True)) == expected[::-1]
            for key in {k for _, k, _ in committed + below + here + nested}:
                assert txn.get(Table.SETTINGS, key) == model.get(key)

    try:
        engine.write(lambda txn: _apply(txn, model, committed))
        first, staged_below = engine.stage_batch(
            [lambda: engine.write(lambda txn: _apply(txn, model, below))]
        )
        second, staged = engine.stage_batch([staged_here])
        for outcome in first + second:
            if outcome.error is not None:
                raise outcome.error
        engine.commit_staged([staged_below, staged])
        with engine.read() as after:
            assert list(after.scan(Table.SETTINGS, b"\x00", b"\xff")) == sorted(model.items())
    finally:
        engine.close()


class _CountedReads:
    """A transaction whose gets are counted (a staged batch's snapshot below)."""

    def __init__(self, txn: KvTxn) -> None:
        self.txn = txn
        self.gets = 0

    def get(self, table: Table, key: bytes) -> bytes | None:
        self.gets += 1
        return self.txn.get(table, key)


def test_a_discard_stages_its_delete_without_reading_below(tmp_path: Path) -> None:
    engine = LmdbEngine(tmp_path / "db")
    try:
        engine.write(lambda txn: txn.put(Table.SETTINGS, b"old", b"x"))
        with engine.read() as snapshot:
            below = _CountedReads(snapshot)
            overlay = OverlayTxn(below, [])  # type: ignore[arg-type]
            overlay.discard(Table.SETTINGS, b"old")
            overlay.discard(Table.SETTINGS, b"never")
            assert below.gets == 0
            assert overlay.get(Table.SETTINGS, b"old") is None
        # both deletes go to the commit (the absent key's a no-op there: the property above)
        assert [(t, d) for t, _, d in overlay.writes.by_table()] == [
            (Table.SETTINGS, [b"never", b"old"])
        ]
    finally:
        engine.close()


# --- AsyncStore: the loop keeps serving while the writer syncs -----------------------------


class _HeldCommits(LmdbStore):
    """Holds each commit on the writer thread until the test opens the gate; records the
    threads that staged and committed and how many batches each commit took."""

    def __init__(self, path: Path, *, fail: bool = False) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = fail
        self.commits: list[int] = []
        self.log: list[str] = []
        """"commit" as each commit starts, beside what a test adds."""
        self.stages = 0
        self.threads: dict[str, str] = {}

    def stage_batch(self, calls):  # type: ignore[no-untyped-def]
        self.threads["stage"] = threading.current_thread().name
        self.stages += 1
        return super().stage_batch(calls)

    def commit_staged(self, batches: Sequence[StagedWrites]) -> None:
        self.threads["commit"] = threading.current_thread().name
        self.log.append("commit")
        self.entered.set()
        self.gate.wait(10)
        self.commits.append(len(batches))
        if self.fail:
            raise StorageError("disk on fire")
        super().commit_staged(batches)


async def test_the_loop_serves_while_a_commit_syncs_and_acks_follow_the_commit(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(20):
        store = _HeldCommits(tmp_path / "db")
        async with (
            AsyncStore(store, max_staged=2) as db,
            kept_busy(),
            asyncio.TaskGroup() as tasks,
        ):
            first = tasks.create_task(db.run(store.set_setting, "a", b"1"))
            await asyncio.to_thread(store.entered.wait, 5)
            # The writer is held in its commit: the loop still runs, and stages what comes.
            read = tasks.create_task(db.run(store.get_setting, "a"))
            later = [
                tasks.create_task(db.append(AppendRequest(envelope=make_envelope(seq=i))))
                for i in range(1, 6)
            ]
            for _ in range(20):
                await asyncio.sleep(0)
            assert store.stages == 2
            # Two batches wait for the writer: what comes now gathers until a commit is done.
            third = tasks.create_task(db.run(store.set_setting, "a", b"3"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert store.stages == 2
            assert await db.read_inline(store.get_setting, "a") is None  # not durable yet
            assert not first.done() and not read.done() and not any(t.done() for t in later)
            assert not third.done()
            store.gate.set()
        assert first.result() is None
        assert read.result() == b"1"  # staged over the first batch before it committed
        assert [t.result() for t in later] == [AppendResult.STORED] * 5
        assert store.threads["stage"] == threading.current_thread().name
        assert store.threads["commit"].startswith("hearthmesh-store")
        assert store.stages == db.batches_committed == sum(store.commits) == 3
        assert db.transactions == len(store.commits)  # one per commit, however many batches
    with LmdbStore(tmp_path / "db") as reopened:
        assert reopened.get_setting("a") == b"3"
    assert _storage_threads() == []


def test_an_idle_loop_commits_in_place_and_a_busy_one_hands_the_commit_over(
    tmp_path: Path, run_on: RunOn[None]
) -> None:
    async def main() -> None:
        async with asyncio.timeout(20):
            store = _HeldCommits(tmp_path / "db")
            store.gate.set()
            async with AsyncStore(store) as db:
                await db.run(store.set_setting, "a", b"1")
                # Nothing else to run: no hand-off to the writer thread and back.
                assert store.threads["commit"] == threading.current_thread().name
                assert await db.read(store.get_setting, "a") == b"1"
                async with kept_busy():
                    await db.run(store.set_setting, "a", b"2")
                # Other work was ready: the loop kept serving it while the writer committed.
                assert store.threads["commit"].startswith("hearthmesh-store")
                assert await db.read(store.get_setting, "a") == b"2"
                await db.run(store.set_setting, "a", b"3")
                assert store.threads["commit"] == threading.current_thread().name
                async with _readable_socket(store.log):
                    await db.run(store.set_setting, "a", b"4")
                # A frame waited on a socket the loop watches: the loop read it before the
                # flushes (it waited one turn: uvloop reads in its poll), or meanwhile while the
                # writer committed (asyncio queues the read behind the flush), never after them.
                in_place = store.threads["commit"] == threading.current_thread().name
                assert not in_place or store.log.index("read") < store.log.index("commit", 3)
                # Several writes at once, as in a burst: the writer commits them while the
                # loop goes on with the burst.
                await asyncio.gather(
                    db.run(store.set_setting, "a", b"5"), db.run(store.set_setting, "b", b"1")
                )
                assert store.threads["commit"].startswith("hearthmesh-store")
                assert store.commits == [1, 1, 1, 1, 1] and db.transactions == 5

    run_on(main())


def test_a_lone_write_waits_one_turn_for_a_busy_loop_then_commits_in_place(
    tmp_path: Path, run_on: RunOn[None]
) -> None:
    """A callback ready as a lone write is flushed runs first; the write then commits on the
    loop's thread, which is idle by then, rather than paying the hand-off to the writer thread
    and back (ARCHITECTURE §10)."""

    async def main() -> None:
        async with asyncio.timeout(20):
            store = _HeldCommits(tmp_path / "db")
            store.gate.set()
            loop = asyncio.get_running_loop()
            async with AsyncStore(store) as db:
                write = asyncio.create_task(db.run(store.set_setting, "a", b"1"))
                await asyncio.sleep(0)  # the write's task runs and asks for its flush
                loop.call_soon(store.log.append, "ready")  # ready as the flush runs
                await write
                assert store.log == ["ready", "commit"]
                assert store.threads["commit"] == threading.current_thread().name
                assert db.transactions == 1
                assert await db.read(store.get_setting, "a") == b"1"

    run_on(main())


def test_a_lone_write_commits_in_place_with_the_lazy_writes_riding_in_its_batch(
    tmp_path: Path, run_on: RunOn[None]
) -> None:
    """A lazy write (an outbox settle) pending beside a lone write is no burst: the batch
    commits on the idle loop's thread, in one transaction, as the write alone would
    (ARCHITECTURE §10)."""

    async def main() -> None:
        async with asyncio.timeout(20):
            store = _HeldCommits(tmp_path / "db")
            store.gate.set()
            async with AsyncStore(store) as db:
                lazy = asyncio.create_task(db.run_lazy(store.set_setting, "b", b"1"))
                await asyncio.sleep(0)  # queued: it waits for a batch to ride in
                await db.run(store.set_setting, "a", b"1")
                await lazy
                assert store.threads["commit"] == threading.current_thread().name
                assert store.commits == [1] and db.transactions == 1
                assert await db.read(store.get_setting, "b") == b"1"

    run_on(main())


@contextlib.asynccontextmanager
async def _readable_socket(log: list[str]) -> AsyncIterator[None]:
    """A socket the loop watches whose data comes while the loop runs its ready callbacks,
    just before the store's flush: the loop has not polled since, so only the poll's own
    descriptor says that a read is waiting (as a transport's is while the loop works)."""
    loop = asyncio.get_running_loop()
    ours, peers = socket.socketpair()
    with ours, peers:
        ours.setblocking(False)

        def read() -> None:
            ours.recv(64)
            log.append("read")

        loop.add_reader(ours.fileno(), read)
        for _ in range(2):  # libuv adds a watched descriptor to its poll at its next turn
            await asyncio.sleep(0)
        loop.call_soon(peers.send, b"frame")  # runs ahead of the flush the caller's write asks
        try:
            yield
        finally:
            loop.remove_reader(ours.fileno())


async def test_a_failed_commit_fails_its_batch_and_every_batch_staged_over_it(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(20):
        store = _HeldCommits(tmp_path / "db", fail=True)
        async with AsyncStore(store, max_staged=2) as db, kept_busy():
            first = asyncio.create_task(db.run(store.set_setting, "a", b"1"))
            await asyncio.to_thread(store.entered.wait, 5)
            second = asyncio.create_task(db.run(store.set_setting, "b", b"2"))
            await asyncio.sleep(0)
            store.gate.set()
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert all(isinstance(r, StorageError) for r in results)
            with pytest.raises(StorageError, match="disk on fire"):
                await db.run(store.set_setting, "c", b"3")
    assert _storage_threads() == []


async def test_a_batch_that_writes_nothing_waits_only_for_the_commits_it_read_over(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(20):
        store = _HeldCommits(tmp_path / "db")
        async with AsyncStore(store, max_staged=2) as db, kept_busy():
            # Nothing in flight: a read-only batch read only what is durable, no commit needed.
            assert await db.run(store.get_setting, "a") is None
            assert store.commits == [] and not store.entered.is_set()
            writing = asyncio.create_task(db.run(store.set_setting, "a", b"1"))
            await asyncio.to_thread(store.entered.wait, 5)
            reading = asyncio.create_task(db.run(store.get_setting, "a"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert store.stages == 3
            assert not reading.done()  # it read the staged write: acted on only once durable
            store.gate.set()
            await writing
            assert await reading == b"1"
            assert db.transactions == 1  # the read-only batches committed nothing
    assert _storage_threads() == []


async def test_what_arrives_during_a_sync_is_staged_as_one_batch_once_it_is_durable(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(20):
        store = _HeldCommits(tmp_path / "db")
        async with (
            AsyncStore(store) as db,
            kept_busy(),
        ):  # MAX_STAGED: one batch waits for the writer
            assert MAX_STAGED == 1
            first = asyncio.create_task(db.run(store.set_setting, "a", b"1"))
            await asyncio.to_thread(store.entered.wait, 5)
            later = []
            for i in range(1, 6):  # one at a time, as a client's frames come in
                later.append(
                    asyncio.create_task(db.append(AppendRequest(envelope=make_envelope(seq=i))))
                )
                for _ in range(5):
                    await asyncio.sleep(0)
            assert store.stages == 1  # they gather while the first commit syncs
            store.gate.set()
            await first
            assert [await t for t in later] == [AppendResult.STORED] * 5
            assert store.stages == db.batches_committed == 2
            assert store.commits == [1, 1]
            assert db.transactions == 2
    assert _storage_threads() == []
