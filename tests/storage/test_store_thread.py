"""`StoreThread`: the store's jobs run in order on one thread, and its answers reach the loop."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from hearthmesh.protocol.errors import StorageError
from hearthmesh.storage.store_thread import StoreThread


async def test_jobs_run_in_the_order_queued_on_one_thread() -> None:
    async with asyncio.timeout(10):
        worker = StoreThread("hearthmesh-store-test")
        ran: list[tuple[int, str]] = []

        def job(i: int) -> None:
            ran.append((i, threading.current_thread().name))

        for i in range(50):
            worker.put_nowait(functools.partial(job, i))
        assert await worker.run(lambda: len(ran)) == 50  # behind every job queued before it
        assert [i for i, _ in ran] == list(range(50))
        assert {name for _, name in ran} == {"hearthmesh-store-test"}
        await asyncio.to_thread(worker.join)


async def test_run_raises_what_the_job_raised_and_the_thread_serves_on() -> None:
    async with asyncio.timeout(10):
        worker = StoreThread("hearthmesh-store-test")

        def fail() -> None:
            raise StorageError("disk full")

        with pytest.raises(StorageError, match="disk full"):
            await worker.run(fail)
        assert await worker.run(lambda: "still here") == "still here"
        await asyncio.to_thread(worker.join)


async def test_a_job_that_raises_is_reported_and_the_jobs_behind_it_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with asyncio.timeout(10):
        reported: list[BaseException | None] = []
        monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
        worker = StoreThread("hearthmesh-store-test")

        def bug() -> None:
            raise ValueError("a job's bug")

        worker.put_nowait(bug)
        assert await worker.run(lambda: 7) == 7
        assert [str(exc) for exc in reported] == ["a job's bug"]
        await asyncio.to_thread(worker.join)


async def test_join_runs_what_is_queued_then_ends_the_thread() -> None:
    async with asyncio.timeout(10):
        worker = StoreThread("hearthmesh-store-test")
        ran: list[int] = []
        worker.put_nowait(lambda: ran.append(1))
        await asyncio.to_thread(worker.join)
        assert ran == [1]
        assert not any(t.name == "hearthmesh-store-test" for t in threading.enumerate())
