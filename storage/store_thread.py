"""`StoreThread`: one thread that runs the store's jobs, in the order they were queued, for the
event loop (ARCHITECTURE §5, §10).

`AsyncStore` owns two: the writer (the one owner of LMDB's write transaction) and the reader.
A job is queued without a future (`put_nowait`: the writer's commits, which hand the loop their
outcome themselves) or awaited (`run`). Either way the loop's side is one put on a
`queue.SimpleQueue`, and the thread's side, once the job has woken the loop, is straight back
to waiting on it: nothing of the thread's own needs the GIL while the loop resumes. (With a
`ThreadPoolExecutor` each job also took its future's condition and the pool's idle semaphore
on both sides: in a ping-pong of a loop and its worker under load 34 on 2 cores, 14 µs a
submit on the loop instead of 3, and the round trip 235 µs at the median instead of 210.)

State owned here: the queue and the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["StoreThread"]

R = TypeVar("R")


class StoreThread:
    """A thread that runs queued jobs one at a time until `join`."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        # A daemon: one left running (an AsyncStore never closed) must not hold up the
        # interpreter's exit; what it had not committed was never acknowledged.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def put_nowait(self, job: Callable[[], object]) -> None:
        """Run `job` after the jobs queued before it; it must not raise (nobody would hear)."""
        self._jobs.put(job)

    async def run(self, fn: Callable[[], R]) -> R:
        """Run `fn` after the jobs queued before it and return (or raise) what it did.

        Cancelling the caller does not stop `fn` once queued.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._jobs.put(lambda: settle_threadsafe(loop, future, fn))
        return await future

    def join(self) -> None:
        """Run what is queued, then end the thread (blocks: call it off the loop)."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a job's bug: reported, and the jobs queued behind it still run
                threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), self._thread)))


def settle_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[R],
    fn: Callable[[], R],
    then: Callable[[], None] | None = None,
) -> None:
    """On a store thread: run `fn`, then hand its result (or error) to `future` on `loop` with
    one wake-up, and run `then` on the loop after it."""
    try:
        outcome: tuple[bool, Any] = (True, fn())
    except BaseException as exc:  # the caller's to handle, on its own thread
        outcome = (False, exc)
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it any more
        loop.call_soon_threadsafe(_settle, future, outcome, then)


def _settle(
    future: asyncio.Future[Any], outcome: tuple[bool, Any], then: Callable[[], None] | None
) -> None:
    ok, value = outcome
    if not future.done():
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    if then is not None:
        then()
