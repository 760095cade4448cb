"""`AsyncStore`: the asyncio face of a store, with group commit for every write.

Writes (`append`, `run`) keep the order they were issued in and never hold a transaction across
an await (CONVENTIONS §5 "LMDB rules"). Writes that arrive together share ONE transaction and
one fsync; each caller's await returns only after that transaction is durable (ARCHITECTURE
§10: acknowledge only after commit). A receipt, an outbox ack and a release mark issued while a
message is being appended all ride on the same commit instead of three more.

A batch is run in two halves (`Store.stage_batch`, `Store.commit_staged`). Its calls run on the
event loop's thread, since they read and change the loop's state (a room's members, a Megolm
session), over the committed snapshot with the batches staged before laid over it. The writer
thread, the one owner of LMDB's write transaction, then replays the batch's writes and commits
them, and the callers' awaits return once that commit is durable. So a busy loop never waits
out an fsync (which took 2.5 ms median and 14 ms p90 on the loaded test machine, when commits ran
on the loop: 429 of alice's 737 loop callbacks over 2 ms in `bench api` were commits). While one
commit syncs, the writes that arrive meanwhile gather, and are staged as one batch once it is
durable (`MAX_STAGED`; a deeper pipeline stages each over the ones before, and the writer
commits every batch it finds waiting in one transaction).
A batch staged when no commit is in flight and the loop has nothing else to run (no callback
ready, no descriptor it watches ready: `LoopIdle`, on asyncio's loop and uvloop's) commits on the
loop's thread instead (`_commit_inline`): the loop had nothing to do but wait, py-lmdb lets the
GIL go during the commit's flushes (so the trio thread runs), and the hand-off to the writer
thread and back, each a thread's wake-up and a wait for the GIL (0.29 and 0.15 ms at the median
in MEASUREMENTS §3.2's same-node trace), is saved. Only a batch with one write a caller waits
for does so (lazy writes may ride in it: they are no burst): a message sent alone takes this
way, while in a burst the writes that gathered during a commit form a larger batch, which the
writer thread commits as the loop goes on with the burst (committed in place, the loop did none
of the burst's work during the flushes: `bench api` same-node msgs/s fell in both first pairs,
sync on and off, MEASUREMENTS §10.2). A lone write that finds a callback ready waits one
turn of the loop for it first, and then commits in place if the loop is idle by then: in the
same-node trace 47 of 100 messages found a callback or two ready (a task's wake-up, trio's
results) and paid the writer's hand-offs (0.47 ms more to the commit's start, 0.07 back), where
one turn costs what the writer would have waited for the GIL anyway. A lone write that finds
the loop idle as it is queued does not wait for a turn at all: it is staged and committed in its
caller's step, which goes on at once (`_commits_at_once`), since the turn to stage it would
run nothing else but cost a poll, where the trio thread can take the GIL.
A write no caller needs durable soon (`run_lazy`: the outbox's settles, SPEC §11.4) rides in the
next batch that commits anyway, or commits alone after `LAZY_MS`: one message sent and acked
cost its home two commits, each two device flushes on the message path's disk, where one would
do (ARCHITECTURE §10). A write that rides behind (`run_behind`: another home's RECEIPT as it
arrives) is lazy with a shorter bound, `BEHIND_MS`, and is staged after the batch's other
writes: a client's send that meets it shares its commit and goes first, instead of waiting out
the receipt's staging, its commit and its client frames (the same-node tail, MEASUREMENTS §3.3).
Work whose cost grows with what is stored (`run_long`: a media blob, a room's history handed to
a new member, a sync plan, the directory at start) runs whole on the writer thread instead, so
the loop keeps its slices of the GIL meanwhile; nothing is staged while it runs.

Reads (`read`) run on a reader thread in a snapshot of what is committed, so a page of history
never waits behind a long write; `read_inline` runs a small read on the loop's thread, where a
hop to another thread would cost more than the read. Neither sees a staged batch before it is
durable. A store whose engine cannot read concurrently (the in-memory twin) commits on the
loop's thread and reads through the write queue.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, Self, TypeVar, cast

from hearthmesh.protocol.errors import LocalProtocolError, StorageError

from .api import AppendRequest, AppendResult, Outcome, Store
from .append import check_appendable
from .loop_idle import LoopIdle
from .staged import StagedWrites

__all__ = ["BEHIND_MS", "LAZY_MS", "MAX_BATCH", "MAX_STAGED", "AsyncStore"]

MAX_BATCH: Final = 1024
"""Most writes staged in one batch; bounds a batch's latency and size."""

MAX_STAGED: Final = 1
"""Most batches staged and waiting for their commit (by default). One: the writes that arrive
while a commit syncs gather, and are staged together once it is durable, so each fsync carries
all of them. With two, the second batch was staged as soon as its first write came and carried
little: `bench api` same-node msgs/s fell from 1,225-1,724 to 347-516 (load 44-50)."""

LAZY_MS: Final = 500
"""Longest a lazy write (`run_lazy`) waits for a batch to ride in before it commits alone."""

BEHIND_MS: Final = 10
"""Longest a write that rides behind (`run_behind`) waits for a batch before it commits alone:
what another home's receipt may wait for a send to share its commit (well below the 20 ms its
sender gathered acks for, `RECEIPT_LINGER_MS`)."""

P = ParamSpec("P")
R = TypeVar("R")
Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class _Write:
    """One queued write: an item of a grouped call (merged with its neighbours of the same
    call, as appends are) or any store call."""

    future: asyncio.Future[Any]
    grouped: Callable[[list[Any]], list[Any]] | None = None
    item: object = None
    call: Callable[[], object] | None = None
    long: bool = False
    """Costs more as the store grows: committed on the writer thread."""
    lazy: bool = False
    """Starts no batch of its own before `due` (`run_lazy`, `run_behind`)."""
    due: float = 0.0
    """The loop's time at which a lazy write starts a batch of its own."""
    behind: bool = False
    """Staged after the batch's other writes (`run_behind`)."""


class AsyncStore:
    """Owns a store and the threads that touch it. Use `async with` or `aclose()`."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = MAX_BATCH,
        max_staged: int = MAX_STAGED,
        lazy_ms: int = LAZY_MS,
        behind_ms: int = BEHIND_MS,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_staged = max_staged
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearthmesh-store")
        self._reader = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearthmesh-store-read")
            if store.concurrent_reads
            else None
        )
        self._pending: list[_Write] = []
        self._eager = 0
        """Pending writes that are not lazy: any of them starts a batch."""
        self._lazy_s = lazy_ms / 1000
        self._behind_s = behind_ms / 1000
        self._lazy_timer: asyncio.TimerHandle | None = None
        """Armed while only lazy writes are pending, for the earliest one's `due`: when it
        fires, they commit alone."""
        self._lazy_ripe = False
        """The lazy writes pending waited `lazy_ms`: they start a batch."""
        self._flush_due = False
        self._deferred = False
        """The pending lone write's flush waited one turn for a busy loop (`_flush`)."""
        self._loop_idle: LoopIdle | None = None
        """Built at the first flush, on the loop's thread (`_flush`)."""
        self._long_running = False
        self._committing: deque[tuple[list[list[_Write]], list[Outcome]]] = deque()
        """Staged batches waiting for their commit, oldest first: their writes and outcomes."""
        self._to_commit: deque[StagedWrites] = deque()
        """The same batches' staged writes, for the writer thread to take."""
        self._closing = False
        self._closed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._reads = 0
        self._no_reads = asyncio.Event()
        self._no_reads.set()
        self.batches_committed = 0
        """Write batches settled so far (for tests and the benchmark); several staged batches
        may share one transaction, and a batch that wrote nothing commits none."""
        self.transactions = 0
        """Write transactions the writer thread committed that wrote something (each one fsync
        on a durable store): the figure `bench api` divides by the messages sent."""

    @property
    def store(self) -> Store:
        """The synchronous store; call its methods through `run` or `read`, never directly."""
        return self._store

    @property
    def waiting_behind(self) -> int:
        """Writes riding behind (`run_behind`) that wait for a batch (for tests)."""
        return sum(write.behind for write in self._pending)

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
        return cast(AppendResult, await self._queue(grouped=self._store.append_many, item=request))

    async def run_grouped(self, fn: Callable[[list[Item]], list[R]], item: Item) -> R:
        """Run `fn` in the next group commit over `item` and the items of the writes queued
        next to it with the same `fn` (as appends merge into one `append_many`); returns
        `item`'s result. `fn` returns one result per item, in order; if it raises, every
        item's caller gets the error (and none of `fn`'s writes is kept)."""
        return cast(R, await self._queue(grouped=fn, item=item))

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `fn(*args, **kwargs)` (calling methods of `store`) in the next group commit.

        `fn` may read and write; it sees the writes queued before it. Returns (or raises what
        `fn` raised, with `fn`'s own writes undone) once the batch committed.
        """
        return cast(R, await self._queue(call=functools.partial(fn, *args, **kwargs)))

    async def run_lazy(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`run` for a write that no one needs durable soon (a settle of acked outbox rows,
        whose loss in a crash only delivers them again, SPEC §11.4): it joins the next batch
        that another write starts, or after `LAZY_MS` commits on its own, so it costs no commit
        (and no wait behind one) of its own while writes flow. Returns once committed, as `run`.
        """
        call = functools.partial(fn, *args, **kwargs)
        return cast(R, await self._queue(call=call, lazy=True, wait_s=self._lazy_s))

    async def run_behind(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`run_lazy` for a write a peer waits on but no client here does (another home's
        RECEIPT, SPEC §16.3): it joins the next batch another write starts, staged after that
        batch's other writes, or commits on its own after `BEHIND_MS`. A send that comes
        meanwhile shares its commit and is told first, instead of waiting behind it. Returns
        once committed, as `run`."""
        call = functools.partial(fn, *args, **kwargs)
        return cast(R, await self._queue(call=call, lazy=True, wait_s=self._behind_s, behind=True))

    async def run_long(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`run` for work whose cost grows with the store (a whole room, a media blob): its
        batch commits on the writer thread, so the event loop is not held for its length."""
        call = functools.partial(fn, *args, **kwargs)
        return cast(R, await self._queue(call=call, long=True))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `fn(*args, **kwargs)` (read methods of `store` only) in a committed snapshot.

        Raises:
            LocalProtocolError: `fn` tried to write.
        """
        if self._reader is None:
            return await self.run(self._store.snapshot, functools.partial(fn, *args, **kwargs))
        self._check_open()
        loop = asyncio.get_running_loop()
        running = self._reader.submit(self._store.snapshot, functools.partial(fn, *args, **kwargs))
        # Counted until the thread is done with it, even if our caller is cancelled sooner.
        self._reads += 1
        self._no_reads.clear()
        running.add_done_callback(lambda _: loop.call_soon_threadsafe(self._read_done))
        return await asyncio.wrap_future(running)

    async def read_inline(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`read`, but on the calling thread when the engine allows it: for a read of a few
        recent keys, which costs less than the hop to another thread and back.

        Raises:
            LocalProtocolError: `fn` tried to write.
        """
        if self._reader is None:
            return await self.read(fn, *args, **kwargs)
        self._check_open()
        return self._store.snapshot(functools.partial(fn, *args, **kwargs))

    def _check_open(self) -> None:
        if self._closing:
            raise StorageError(f"store {self._store.where} is closing")

    def _read_done(self) -> None:
        self._reads -= 1
        if not self._reads:
            self._no_reads.set()

    async def _queue(
        self,
        *,
        grouped: Callable[[list[Any]], list[Any]] | None = None,
        item: object = None,
        call: Callable[[], object] | None = None,
        long: bool = False,
        lazy: bool = False,
        wait_s: float = 0.0,
        behind: bool = False,
    ) -> object:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        write = _Write(
            future=future,
            grouped=grouped,
            item=item,
            call=call,
            long=long,
            lazy=lazy,
            due=loop.time() + wait_s,
            behind=behind,
        )
        self._pending.append(write)
        self._eager += not lazy
        self._idle.clear()
        if self._commits_at_once(loop, write):
            self._flush_due = True
            self._flush(loop)  # settles `future` before the await: no turn of the loop
        else:
            self._flush_soon(loop)
        return await future

    def _commits_at_once(self, loop: asyncio.AbstractEventLoop, write: _Write) -> bool:
        """A lone write on an idle loop is staged and committed in place in its caller's step,
        which then goes on without a turn of the loop: the turn to `_flush` and the caller's
        wake-up after it would run nothing else (the loop is idle), but the turn costs a poll,
        where the trio thread can take the GIL (ARCHITECTURE §10). Only where `_flush` would
        commit it in place anyway: nothing staged, flushing or running long, no other write a
        caller waits for (lazy ones ride along)."""
        if write.lazy or self._flush_due or self._long_running:
            return False
        return self._one_write_to_commit() and self._idle_now(loop)

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stage the pending writes in the next loop iteration (writes issued together in this
        one join the batch), unless a long write runs or `max_staged` batches wait for their
        commit: then they gather until it is done."""
        if self._flush_due or self._long_running or len(self._committing) >= self._max_staged:
            return
        if not self._pending:
            if not self._committing:
                self._idle.set()
            return
        if not (self._eager or self._lazy_ripe or self._closing):  # lazy only: wait for company
            due = min(write.due for write in self._pending)
            if self._lazy_timer is None or due < self._lazy_timer.when():
                if self._lazy_timer is not None:
                    self._lazy_timer.cancel()
                self._lazy_timer = loop.call_at(due, self._lazy_expired, loop)
            return
        self._flush_due = True
        loop.call_soon(self._flush, loop)

    def _lazy_expired(self, loop: asyncio.AbstractEventLoop) -> None:
        """No batch came for the lazy writes in time: they start one."""
        self._lazy_timer = None
        self._lazy_ripe = True
        self._flush_soon(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lone_write_waits(loop):
            # Its commit would go to the writer thread for a callback or two that are ready:
            # they run first (one turn), then it commits in place if the loop is idle then.
            self._deferred = True
            loop.call_soon(self._flush, loop)
            return
        self._deferred = False
        self._flush_due = False
        batch = _behind_last(self._pending[: self._max_batch])
        del self._pending[: self._max_batch]
        self._eager = sum(not write.lazy for write in self._pending)
        if not any(write.lazy for write in self._pending):  # every lazy write found its batch
            self._lazy_ripe = False
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
        groups = _group_calls(batch)
        calls = [self._call_of(group) for group in groups]
        if any(write.long for write in batch):
            # Behind the staged batches on the one writer thread, so it sees them committed.
            self._long_running = True
            done = loop.run_in_executor(self._writer, self._store.run_batch, calls)
            done.add_done_callback(
                lambda _: self._ran_long(loop, groups, done.exception() or done.result())
            )
            return
        try:
            outcomes, staged = self._store.stage_batch(calls)
        except Exception as exc:  # every caller of the batch gets it
            self._settle_all(groups, exc)
            self._flush_soon(loop)
            return
        if staged is None or not (staged or self._committing):
            # The engine committed it (the in-memory twin), or it wrote nothing and read only
            # what is durable: no commit to wait for.
            self._settle_all(groups, outcomes)
        elif _lone(batch) and not self._committing and self._idle_now(loop):
            self._commit_inline(groups, outcomes, staged)
        else:
            self._committing.append((groups, outcomes))
            self._to_commit.append(staged)
            self._writer.submit(self._commit_waiting, loop)
        self._flush_soon(loop)

    def _lone_write_waits(self, loop: asyncio.AbstractEventLoop) -> bool:
        """A lone write, with no commit in flight, finds the loop busy for the first time (on
        an engine with a commit to wait for: the in-memory twin, which reads on the loop, also
        commits as it stages, so the turn would win it nothing)."""
        if self._deferred:
            return False
        return self._one_write_to_commit() and not self._idle_now(loop)

    def _one_write_to_commit(self) -> bool:
        """One pending write a caller waits for, none long, no commit in flight, on an engine
        with a commit to wait for (not the in-memory twin): where committing in place may
        save the writer thread's hand-offs."""
        if self._reader is None or self._committing or self._eager != 1:
            return False
        return not any(write.long for write in self._pending)

    def _idle_now(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self._loop_idle is None:
            self._loop_idle = LoopIdle(loop)
        return self._loop_idle()

    def _commit_inline(
        self, groups: list[list[_Write]], outcomes: list[Outcome], staged: StagedWrites
    ) -> None:
        """Commit a batch on the loop's thread, which had nothing else to run: py-lmdb lets the
        GIL go for the commit, so the trio thread runs during the flushes, and the hand-off to
        the writer thread and back (each a thread's wake-up and a wait for the GIL) is saved."""
        try:
            self._store.commit_staged([staged])
        except Exception as exc:  # every caller of the batch gets it
            self._settle_all(groups, exc)
            return
        self.transactions += 1
        self._settle_all(groups, outcomes)

    def _commit_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: commit every staged batch waiting (none if an earlier call
        took them all) in one transaction, then hand the loop how many it took and the
        commit's error."""
        taken: list[StagedWrites] = []
        while self._to_commit:
            taken.append(self._to_commit.popleft())
        if not taken:
            return
        error: Exception | None = None
        try:
            self._store.commit_staged(taken)
        except Exception as exc:  # every caller of these batches gets it
            error = exc
        wrote = any(taken)  # LMDB neither writes nor syncs a transaction that wrote nothing
        loop.call_soon_threadsafe(self._committed, loop, len(taken), wrote, error)

    def _committed(
        self, loop: asyncio.AbstractEventLoop, count: int, wrote: bool, error: Exception | None
    ) -> None:
        self.transactions += wrote
        for _ in range(count):
            groups, outcomes = self._committing.popleft()
            self._settle_all(groups, error or outcomes)
        self._flush_soon(loop)

    def _ran_long(
        self,
        loop: asyncio.AbstractEventLoop,
        groups: list[list[_Write]],
        outcomes: list[Outcome] | BaseException,
    ) -> None:
        self._long_running = False
        self.transactions += 1
        self._settle_all(groups, outcomes)
        self._flush_soon(loop)

    def _call_of(self, group: list[_Write]) -> Callable[[], object]:
        first = group[0]
        if first.grouped is None:
            if first.call is None:
                raise LocalProtocolError("a queued write with nothing to run")
            return first.call
        return functools.partial(first.grouped, [write.item for write in group])

    def _settle_all(
        self, groups: list[list[_Write]], outcomes: list[Outcome] | BaseException
    ) -> None:
        if isinstance(outcomes, BaseException):
            for group in groups:
                _settle(group, Outcome(error=cast(Exception, outcomes)))
            return
        self.batches_committed += 1
        for group, outcome in zip(groups, outcomes, strict=True):
            _settle(group, outcome)

    async def aclose(self) -> None:
        """Commit what is queued, close the store and stop the threads; idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            self._flush_soon(asyncio.get_running_loop())  # lazy writes wait no longer
            await self._idle.wait()
            await self._no_reads.wait()  # no snapshot may outlive the environment
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer, self._store.close)
        finally:
            if self._reader is not None:
                self._reader.shutdown(wait=True)
            self._writer.shutdown(wait=True)
            self._closed.set()


def _group_calls(batch: list[_Write]) -> list[list[_Write]]:
    """Consecutive items of one grouped call (appends: `append_many`) become one call; every
    other call stands alone."""
    groups: list[list[_Write]] = []
    for write in batch:
        if write.grouped is not None and groups and groups[-1][0].grouped == write.grouped:
            groups[-1].append(write)
        else:
            groups.append([write])
    return groups


def _behind_last(batch: list[_Write]) -> list[_Write]:
    """The batch's writes in the order they were issued, those that ride behind moved last (in
    their own order): each came from outside, unordered with the writes issued here, so staging
    it after them is taking it in a moment later."""
    if not any(write.behind for write in batch):
        return batch
    return [w for w in batch if not w.behind] + [w for w in batch if w.behind]


def _lone(batch: list[_Write]) -> bool:
    """At most one write a caller waits for: the lazy ones riding in the batch (an outbox
    settle waiting for company) do not make it a burst."""
    return sum(not write.lazy for write in batch) <= 1


def _settle(group: list[_Write], outcome: Outcome) -> None:
    if outcome.error is not None:
        for write in group:
            if not write.future.done():
                write.future.set_exception(outcome.error)
        return
    values = outcome.value if group[0].grouped is not None else [outcome.value]
    for write, value in zip(group, cast(list[object], values), strict=True):
        if not write.future.done():
            write.future.set_result(value)
