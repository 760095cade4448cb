"""AsyncStore: one writer with group commit for every write, reads beside it, acks after commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.errors import LocalProtocolError, StorageError
from hearthmesh.storage.api import AppendRequest, AppendResult, Direction, Outcome, Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.storage.memory import MemoryStore

from .helpers import ROOM_A, make_envelope


def _storage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hearthmesh-store")]


async def test_concurrent_appends_share_transactions(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        envelopes = [make_envelope(seq=i, wall_ms=i) for i in range(1, 301)]
        async with AsyncStore(LmdbStore(tmp_path / "db")) as db:
            results = await asyncio.gather(
                *(db.append(AppendRequest(envelope=e)) for e in envelopes)
            )
            assert results == [AppendResult.STORED] * 300
            assert db.batches_committed < 30
            assert await db.append(AppendRequest(envelope=envelopes[0])) is AppendResult.DUPLICATE
            page = await db.run(
                db.store.page_history, ROOM_A, direction=Direction.FORWARD, limit=500
            )
            assert len(page.events) == 300
        assert _storage_threads() == []


class _GatedStore(MemoryStore):
    """A long write that holds the writer thread until the test opens the gate; records the
    sizes of the append batches and the threads that ran each kind of write."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.threads: dict[str, str] = {}

    def hold(self) -> None:
        self.threads["long"] = threading.current_thread().name
        self.entered.set()
        self.gate.wait(10)

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.threads["append"] = threading.current_thread().name
        self.batches.append(len(requests))
        return super().append_many(requests)


async def test_acknowledged_only_after_commit_and_later_arrivals_batch_together() -> None:
    async with asyncio.timeout(10):
        gated = _GatedStore()
        async with AsyncStore(gated) as db, asyncio.TaskGroup() as tasks:
            first = tasks.create_task(db.append(AppendRequest(envelope=make_envelope(seq=1))))
            await first  # an append alone: its own batch, committed on the loop's thread
            holding = tasks.create_task(db.run_long(gated.hold))
            await asyncio.to_thread(gated.entered.wait, 5)
            later = [
                tasks.create_task(
                    db.append(AppendRequest(envelope=make_envelope(seq=i, wall_ms=i)))
                )
                for i in range(2, 12)
            ]
            await asyncio.sleep(0.05)  # the later appends queue behind the long write
            assert not holding.done() and not any(t.done() for t in later)
            gated.gate.set()
        assert first.result() is AppendResult.STORED
        assert [t.result() for t in later] == [AppendResult.STORED] * 10
        assert gated.batches == [1, 10]
        assert gated.threads == {
            "append": threading.current_thread().name,
            "long": gated.threads["long"],
        }
        assert gated.threads["long"].startswith("hearthmesh-store")


class _FailingStore(MemoryStore):
    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        raise StorageError("disk on fire")


async def test_a_failed_commit_fails_every_append_of_the_batch() -> None:
    async with asyncio.timeout(10):
        async with AsyncStore(_FailingStore()) as db:
            results = await asyncio.gather(
                *(db.append(AppendRequest(envelope=make_envelope(seq=i))) for i in range(1, 4)),
                return_exceptions=True,
            )
        assert all(isinstance(r, StorageError) for r in results)


async def test_lifetime_is_clean_and_idempotent() -> None:
    async with asyncio.timeout(10):
        store = MemoryStore()
        db = AsyncStore(store)
        with pytest.raises(LocalProtocolError):
            await db.append(AppendRequest(envelope=make_envelope(kind=Kind.PRESENCE)))
        await db.append(AppendRequest(envelope=make_envelope()))
        await db.aclose()
        await db.aclose()
        assert _storage_threads() == []
        with pytest.raises(StorageError, match="closing"):
            await db.append(AppendRequest(envelope=make_envelope(seq=2)))
        with pytest.raises(StorageError, match="closed"):
            store.get_event(b"\x00" * 32)


async def test_every_kind_of_write_shares_the_commit(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db")) as db:
            await db.append(AppendRequest(envelope=make_envelope(seq=1)))
            before = db.batches_committed
            results = await asyncio.gather(
                db.append(AppendRequest(envelope=make_envelope(seq=2, wall_ms=2))),
                db.run(db.store.set_setting, "a", b"1"),
                db.append(AppendRequest(envelope=make_envelope(seq=3, wall_ms=3))),
                db.run(db.store.get_setting, "a"),  # sees the write queued before it
                db.run(db.store.set_setting, "", b"bad key"),  # fails alone
                return_exceptions=True,
            )
            assert list(results[:4]) == [AppendResult.STORED, None, AppendResult.STORED, b"1"]
            assert isinstance(results[4], LocalProtocolError)
            assert db.batches_committed == before + 1
            assert await db.read(db.store.last_seq, ROOM_A, make_envelope().sender_device) == 3


class _SlowWriteStore(LmdbStore):
    """Holds every write batch until the test opens the gate."""

    gate = threading.Event()

    def run_batch(self, calls: Sequence[Callable[[], object]]) -> list[Outcome]:
        self.gate.wait(10)
        return super().run_batch(calls)


async def test_reads_do_not_wait_behind_a_commit(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        store = _SlowWriteStore(tmp_path / "db")
        async with AsyncStore(store) as db:
            store.gate.set()
            await db.run(store.set_setting, "a", b"1")
            store.gate.clear()
            writing = asyncio.create_task(db.run_long(store.set_setting, "a", b"2"))
            await asyncio.sleep(0.05)
            assert await db.read(store.get_setting, "a") == b"1"  # the committed state
            assert not writing.done()
            with pytest.raises(LocalProtocolError):
                await db.read(store.set_setting, "a", b"3")
            store.gate.set()
            await writing
            assert await db.read(store.get_setting, "a") == b"2"
        assert _storage_threads() == []


async def test_reads_survive_the_map_growing_under_them(tmp_path: Path) -> None:
    async with asyncio.timeout(60):
        async with AsyncStore(LmdbStore(tmp_path / "db", map_size=64 * 1024)) as db:
            start = db.store.map_size  # type: ignore[attr-defined]

            async def write_much() -> None:
                for i in range(1, 200):
                    await db.append(AppendRequest(envelope=make_envelope(seq=i, body=b"x" * 900)))

            async def read_much() -> int:
                pages = 0
                while not writer.done():
                    await db.read(db.store.page_history, ROOM_A, direction=Direction.BACKWARD)
                    pages += 1
                return pages

            writer = asyncio.create_task(write_much())
            assert await read_much() > 0
            await writer
            assert db.store.map_size > start  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_inline_reads_see_commits_and_refuse_writes(tmp_path: Path, kind: str) -> None:
    async with asyncio.timeout(10):
        store = MemoryStore() if kind == "memory" else LmdbStore(tmp_path / "db")
        async with AsyncStore(store) as db:
            await db.run(store.set_setting, "a", b"1")
            assert await db.read_inline(store.get_setting, "a") == b"1"
            with pytest.raises(LocalProtocolError):
                await db.read_inline(store.set_setting, "a", b"2")
            assert await db.read_inline(store.get_setting, "a") == b"1"


async def test_a_lazy_write_rides_in_the_next_batch_another_write_starts(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db"), lazy_ms=60_000) as db:
            lazy = asyncio.create_task(db.run_lazy(db.store.set_setting, "settled", b"1"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not lazy.done() and db.transactions == 0  # no commit of its own
            assert await db.read_inline(db.store.get_setting, "settled") is None
            await db.append(AppendRequest(envelope=make_envelope(seq=1)))
            assert db.transactions == 1
            await lazy  # its future settled in that commit; its task wakes on the next turn
            assert db.transactions == 1  # both in one commit
            assert await db.read_inline(db.store.get_setting, "settled") == b"1"


async def test_a_lazy_write_alone_commits_after_its_bound(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db"), lazy_ms=1) as db:
            await db.run_lazy(db.store.set_setting, "settled", b"1")
            assert db.transactions == 1
            assert await db.read_inline(db.store.get_setting, "settled") == b"1"
            await db.run_lazy(db.store.set_setting, "settled", b"2")  # the timer arms again
            assert db.transactions == 2


def _seen_then_set(store: Store) -> bytes | None:
    """Records what the setting "sent" held when it ran, and returns it."""
    seen = store.get_setting("sent")
    store.set_setting("seen", seen or b"-")
    return seen


async def test_a_write_behind_rides_in_the_next_batch_staged_after_the_write_that_started_it(
    tmp_path: Path,
) -> None:
    """Another home's receipt (`run_behind`) waits for the next batch and is staged after the
    write that started it (a client's send), which commits in place with it: one commit, the
    send first (SPEC §16.3.3)."""
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db"), behind_ms=60_000) as db:
            behind = asyncio.create_task(db.run_behind(_seen_then_set, db.store))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not behind.done() and db.transactions == 0  # no commit of its own
            assert db.waiting_behind == 1
            await db.run(db.store.set_setting, "sent", b"1")
            assert db.transactions == 1 and db.waiting_behind == 0
            assert await behind == b"1"  # staged after the send, though issued before it
            assert db.transactions == 1  # both in one commit
            assert await db.read_inline(db.store.get_setting, "seen") == b"1"


async def test_a_write_behind_alone_commits_after_its_own_bound_with_the_lazy_writes(
    tmp_path: Path,
) -> None:
    """A write behind waits `behind_ms`, not the lazy writes' bound: one pending before it (an
    hour here) commits with it then."""
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db"), lazy_ms=3_600_000, behind_ms=1) as db:
            lazy = asyncio.create_task(db.run_lazy(db.store.set_setting, "settled", b"1"))
            for _ in range(5):
                await asyncio.sleep(0)
            assert await db.run_behind(_seen_then_set, db.store) is None
            await lazy
            assert db.transactions == 1
            assert await db.read_inline(db.store.get_setting, "settled") == b"1"


async def test_closing_commits_lazy_writes_without_waiting_out_their_bound(tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        db = AsyncStore(LmdbStore(tmp_path / "db"), lazy_ms=3_600_000)
        lazy = asyncio.create_task(db.run_lazy(db.store.set_setting, "settled", b"1"))
        await asyncio.sleep(0)
        await db.aclose()  # the test's timeout would end it long before the hour
        assert lazy.done() and lazy.exception() is None
        with LmdbStore(tmp_path / "db") as reopened:
            assert reopened.get_setting("settled") == b"1"
        assert _storage_threads() == []


async def test_a_lone_write_on_an_idle_loop_commits_without_a_turn(tmp_path: Path) -> None:
    """A lone write that finds the loop idle is staged and committed in its caller's step, which
    goes on at once: no turn of the loop to stage it and none back (ARCHITECTURE §10). A
    callback ready makes the loop busy: the write waits its turn as before."""
    async with asyncio.timeout(20):
        async with AsyncStore(LmdbStore(tmp_path / "db")) as db:
            write = db.run(db.store.set_setting, "a", b"1")
            with pytest.raises(StopIteration):
                write.send(None)  # done in its first step: it never yielded to the loop
            assert db.transactions == 1
            assert await db.read(db.store.get_setting, "a") == b"1"  # durable: a snapshot sees it
            asyncio.get_running_loop().call_soon(lambda: None)
            write = db.run(db.store.set_setting, "b", b"1")
            waiting = write.send(None)  # the loop was busy: the write yielded its future
            committed = asyncio.Event()
            waiting.add_done_callback(lambda _: committed.set())
            await committed.wait()  # committed on a later turn
            with pytest.raises(StopIteration):
                write.send(None)
            assert db.transactions == 2
            assert await db.read(db.store.get_setting, "b") == b"1"
