"""`HeldWatch`: the room-key askers read what is held only while something may be; a hold
written after an empty read, or before the store opened, is still read; a quiet asker sleeps
until a committed batch that held something is told (or its backstop finds the count moved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.e2ee import held_watch
from hearthmesh.node.e2ee.held_watch import HeldWatch
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

ROOM = RoomId(b"r" * 32)
SESSION = b"s" * 32
MESSAGE = MessageId(b"m" * 32)


class _CountedRead:
    """`held_sessions`, counting the times it touched the store."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, store: Store) -> list[tuple[RoomId, bytes]]:
        self.reads += 1
        return store.held_sessions(10)


async def test_an_idle_watch_reads_nothing_until_a_hold_is_written(tmp_path: Path) -> None:
    async with asyncio.timeout(10), AsyncStore(LmdbStore(tmp_path / "db")) as db:
        watch, held = HeldWatch(db), _CountedRead()
        assert await watch.read(held) == []
        assert held.reads == 2  # the snapshot, then the write path's view (staged batches too)
        assert watch.quiet
        for _ in range(3):
            assert await watch.read(held) == []
        assert held.reads == 2  # quiet: the store is not read
        await db.run(db.store.hold_encrypted, SESSION, MESSAGE, ROOM)
        assert not watch.quiet
        assert await watch.read(held) == [(ROOM, SESSION)]
        assert await watch.read(held) == [(ROOM, SESSION)]  # read each round while held
        await db.run(db.store.unhold_encrypted, SESSION, MESSAGE)
        assert await watch.read(held) == []
        assert watch.quiet


async def test_what_was_held_before_the_store_opened_is_read_at_once(tmp_path: Path) -> None:
    before = LmdbStore(tmp_path / "db")
    before.hold_encrypted(SESSION, MESSAGE, ROOM)
    before.close()
    async with asyncio.timeout(10), AsyncStore(LmdbStore(tmp_path / "db")) as db:
        assert db.store.holds == 0  # counted since this store opened: none yet
        watch = HeldWatch(db)
        assert not watch.quiet
        assert await watch.read(_CountedRead()) == [(ROOM, SESSION)]


def test_a_hold_moves_the_count_once_its_write_returned(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "db")
    try:
        assert store.holds == 0
        store.hold_encrypted(SESSION, MESSAGE, ROOM)
        store.hold_encrypted(SESSION, MessageId(b"n" * 32), ROOM)
        assert store.holds == 2
        store.unhold_encrypted(SESSION, MESSAGE)
        assert store.holds == 2  # only holds move it: a read after an unhold finds what is left
    finally:
        store.close()


async def _asleep(task: asyncio.Task[None]) -> bool:
    """The task is still waiting after a short deadline (a negative check on a condition)."""
    done, _ = await asyncio.wait({task}, timeout=0.2)
    return not done


async def test_a_quiet_asker_sleeps_until_a_committed_hold_is_told(tmp_path: Path) -> None:
    async with asyncio.timeout(10), AsyncStore(LmdbStore(tmp_path / "db")) as db:
        watch = HeldWatch(db)
        assert await watch.read(_CountedRead()) == []
        waiting = asyncio.create_task(watch.wait_due(None))
        watch.after_batch(StoreOutcome())  # a batch that held nothing
        assert await _asleep(waiting)
        await db.run(db.store.hold_encrypted, SESSION, MESSAGE, ROOM)
        assert await _asleep(waiting)  # committed, but no outcome told it: the backstop's case
        watch.after_batch(StoreOutcome())
        await waiting  # woken: its next round reads the hold
        assert await watch.read(_CountedRead()) == [(ROOM, SESSION)]


async def test_a_watch_not_quiet_waits_its_due_time_without_a_wake(tmp_path: Path) -> None:
    """Before its first read (what a restart left held) the asker goes round at once, and while
    something is held at its next due time."""
    async with asyncio.timeout(10), AsyncStore(LmdbStore(tmp_path / "db")) as db:
        watch = HeldWatch(db)
        await watch.wait_due(None)
        await db.run(db.store.hold_encrypted, SESSION, MESSAGE, ROOM)
        assert await watch.read(_CountedRead()) == [(ROOM, SESSION)]
        await watch.next_round(0, 0)


async def test_a_hold_no_outcome_told_is_found_by_the_backstop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(held_watch, "QUIET_BACKSTOP_S", 0.05)
    async with asyncio.timeout(10), AsyncStore(LmdbStore(tmp_path / "db")) as db:
        watch = HeldWatch(db)
        assert await watch.read(_CountedRead()) == []
        waiting = asyncio.create_task(watch.wait_due(None))
        await asyncio.sleep(0)  # it waits now: the hold below comes after its look
        await db.run(db.store.hold_encrypted, SESSION, MESSAGE, ROOM)
        await waiting  # no outcome told: the backstop ends the wait
        assert await watch.read(_CountedRead()) == [(ROOM, SESSION)]
