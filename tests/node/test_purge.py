"""The purge service (SPEC §11.5.4): bounded batches, every interval, over a real store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.purge import PROGRESS_EVERY_BATCHES, PurgeService
from hearthmesh.storage.api import AppendRequest
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.memory import MemoryStore

from ..conftest import FakeClock
from ..storage.helpers import PEER, USER_B, make_envelope

DAY_MS = 24 * 3600 * 1000


def _service(store: AsyncStore, clock: FakeClock, *, batch: int, interval_ms: int) -> PurgeService:
    return PurgeService(
        store=store,
        directory=HomeDirectory(),
        clock=clock,
        interval_ms=interval_ms,
        batch=batch,
        retention_ms=DAY_MS,
    )


async def test_a_pass_purges_history_and_relay_in_bounded_batches(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(10), AsyncStore(MemoryStore()) as store:
        now = clock.now_ms()
        old = [make_envelope(seq=i + 1, wall_ms=now - 2 * DAY_MS + i) for i in range(25)]
        kept = make_envelope(seq=99, wall_ms=now)
        store.store.append_many([AppendRequest(envelope=e) for e in [*old, kept]])
        for index in range(7):
            store.store.relay_put(
                USER_B,
                make_envelope(seq=100 + index, wall_ms=now),
                peer=PEER,
                known=True,
                now_ms=now - DAY_MS,
                ttl_ms=1_000,
            )
        service = _service(store, clock, batch=2, interval_ms=60_000)
        with caplog.at_level(logging.INFO, logger="hearthmesh.node.purge"):
            done = await service.purge_once()
        assert (done.events, done.relay_entries) == (25, 7)
        assert done.batches == 13  # 12 full batches of 2 events, then one short
        assert any("under way" in r.getMessage() for r in caplog.records)  # > 10 batches
        assert done.batches > PROGRESS_EVERY_BATCHES
        assert store.store.get_event(kept.message_id) is not None
        assert all(store.store.get_event(e.message_id) is None for e in old)
        assert store.store.relay_recipients() == []


async def test_the_service_runs_every_interval(clock: FakeClock) -> None:
    async with asyncio.timeout(10), AsyncStore(MemoryStore()) as store:
        service = _service(store, clock, batch=100, interval_ms=10)
        entry = make_envelope(seq=1, wall_ms=clock.now_ms())
        store.store.relay_put(
            USER_B, entry, peer=PEER, known=True, now_ms=clock.now_ms(), ttl_ms=5_000
        )
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(service.run())
            while service.passes < 2:  # noqa: ASYNC110 - passes before the TTL keep the entry
                await asyncio.sleep(0.01)
            assert await store.run(store.store.relay_recipients) == [USER_B]
            clock.advance(5_000)
            # The count, not the table: the purge's commit is seen before its task counts it.
            while service.removed == 0:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
            assert service.removed == 1
            assert await store.run(store.store.relay_recipients) == []
            running.cancel()
