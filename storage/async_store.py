"""`AsyncStore`: the asyncio face of a store, with group commit for appends.

Every storage call runs on ONE worker thread, so no transaction is ever held across an await
and writes keep a deterministic order (CONVENTIONS §5 "LMDB rules"). Appends that arrive
together are committed in one write transaction (`Store.append_many`); each caller's await
returns only after that transaction committed (DESIGN §8: acknowledge only after commit).

While one batch commits, new appends queue up and form the next batch: the more load, the
bigger the batches, and one fsync is shared by the whole batch.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, ParamSpec, Self, TypeVar

from hearthmesh.protocol.errors import StorageError

from .api import AppendRequest, AppendResult, Store
from .append import check_appendable

__all__ = ["MAX_BATCH", "AsyncStore"]

MAX_BATCH: Final = 1024
"""Most appends committed in one transaction; bounds a commit's latency and size."""

P = ParamSpec("P")
R = TypeVar("R")
_Waiter = tuple[AppendRequest, "asyncio.Future[AppendResult]"]


class AsyncStore:
    """Owns a store and the one thread that touches it. Use `async with` or `aclose()`."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearthmesh-store")
        self._pending: list[_Waiter] = []
        self._flushing = False
        self._closing = False
        self._closed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches_committed = 0
        """Write transactions used for appends so far (for tests and the benchmark)."""

    @property
    def store(self) -> Store:
        """The synchronous store; call its methods through `run`, never directly."""
        return self._store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append in the next group commit; returns once that transaction committed.

        Cancelling the caller does not undo the append if its batch already started.

        Raises:
            LocalProtocolError: an event kind that is never stored.
            StorageError: the batch's transaction failed, or the store is closing.
        """
        check_appendable(request)
        if self._closing:
            raise StorageError(f"store {self._store.where} is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._pending.append((request, future))
        if not self._flushing:
            # Next loop iteration: appends issued together in this one join the batch.
            self._flushing = True
            self._idle.clear()
            loop.call_soon(self._flush, loop)
        return await future

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `fn(*args, **kwargs)` (a method of `store`) on the storage thread."""
        if self._closing:
            raise StorageError(f"store {self._store.where} is closing")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        requests = [request for request, _ in batch]
        done = loop.run_in_executor(self._executor, self._store.append_many, requests)
        done.add_done_callback(functools.partial(self._flushed, loop, batch))

    def _flushed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Waiter],
        done: asyncio.Future[list[AppendResult]],
    ) -> None:
        error = done.exception()
        if error is None:
            self.batches_committed += 1
            for (_, future), result in zip(batch, done.result(), strict=True):
                if not future.done():
                    future.set_result(result)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        if self._pending:
            self._flush(loop)
        else:
            self._flushing = False
            self._idle.set()

    async def aclose(self) -> None:
        """Commit what is queued, close the store and stop the thread; idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._idle.wait()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._store.close)
        finally:
            self._executor.shutdown(wait=True)
            self._closed.set()
