"""One trio run loop for libp2p, driven from asyncio by callbacks (ARCHITECTURE §5).

The run has a thread of its own, or (`on_loop`) it is a guest on the event loop's own thread
(`guest_run.start_guest_on_loop`): trio's scheduler ticks are the loop's callbacks and the
loop's own wait covers trio's I/O (its epoll descriptor and next deadline), so no other
thread is involved. On the loop's thread, libp2p's work and the node's never contend for the
GIL: with a thread of its own, each wake-up of one thread waited for the other to let go of it
(traced in `bench api`'s layout: the deliver write, the batch's read and the ack's write each
waited out the loop's iteration, 0.1-0.4 ms at the median and ms at p90). A thread runs one
trio run at most, so a second `on_loop` run in a process takes a thread, as does a run when
the installed trio is not the one `guest_run` was written for, and a run started by a thread
that switched its network namespace since this module was imported (netlab's `in_netns`): a
guest run opens its sockets on the loop's thread, in whatever namespace that thread is in by
then, while a thread of its own stays in the one it started in. Measured, it was not faster
where it matters (slower across nodes with the disk's sync on, ARCHITECTURE §5), so nodes run
with a thread unless `NodeConfig.trio_on_loop` asks otherwise.

asyncio → trio: `TrioThread.run(fn, *args)` hands `fn` to the trio thread with
`TrioToken.run_sync_soon`, which starts it in the thread's work nursery; the outcome comes back
with `loop.call_soon_threadsafe`. A guest run starts the task in place instead
(`GuestRun.call_now`: no write to trio's wake-up socket) and hands the outcome back with
`loop.call_soon`. Cancelling the awaiting asyncio task cancels the trio task's
cancel scope and waits (briefly) until the trio side has unwound, so nothing keeps running on
behalf of a caller that gave up. trio → asyncio: `TrioThread.to_asyncio(fn, *args)`.

The run's lifetime is `start()` … `stop()`: every trio task runs in the work nursery, which
is cancelled before the service context (the libp2p host) is exited, and `stop()` returns only
after the run has ended (and its thread, if it has one, has been joined). A run can also end
unasked: a task's error that escaped (py-libp2p's, in its service nursery) ends the whole run.
`wait_ended()` returns that error as soon as it happens, so the node can fail-stop (SPEC
§11.8.5) instead of storing and acking what it can no longer deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

from hearthmesh.node.p2p.call_workers import CallWorkers
from hearthmesh.node.p2p.errors import HostClosed, P2PError
from hearthmesh.node.p2p.guest_run import GuestRun, start_guest_on_loop

__all__ = ["CANCEL_GRACE_S", "TrioThread"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_GRACE_S: Final = 2.0
"""How long a cancelled asyncio caller waits for its trio task to unwind (it takes ~0.3 ms)."""


def _thread_network_namespace() -> tuple[int, int] | None:
    """The calling thread's network namespace (device, inode), None where /proc cannot say."""
    try:
        found = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    return found.st_dev, found.st_ino


_IMPORTED_IN_NAMESPACE: Final = _thread_network_namespace()
"""The namespace this module was imported in: the process's, unless its importer had switched
(a process run by `ip netns exec` imports in its namespace, and stays there)."""


class _Call(Generic[T]):
    """One asyncio → trio call. `scope` and `cancel_requested` are touched on the trio thread."""

    __slots__ = ("cancel_requested", "finished", "result", "scope")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.result: asyncio.Future[T] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def cancel_on_trio(self) -> None:
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


def _settle(call: _Call[Any], ok: bool, value: Any) -> None:
    """Runs on asyncio: deliver the outcome unless the caller already gave up."""
    if not call.result.done():
        if ok:
            call.result.set_result(value)
        else:
            call.result.set_exception(value)
    if not call.finished.done():
        call.finished.set_result(None)


def _mark_ready(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class TrioThread:
    """A trio run that enters `service()` and then serves calls until `stop()`."""

    def __init__(self, *, name: str, on_loop: bool = False) -> None:
        """`on_loop`: run as a guest on the event loop's thread when that thread runs no
        trio run yet (else in a thread of its own)."""
        self._name = name
        self._on_loop = on_loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._finished: asyncio.Future[None] | None = None
        self._stopping = False
        self._reported = False
        """`wait_ended` handed out the error that ended the run: `stop` raises it no more."""
        self._guest_thread: int | None = None
        """The loop's thread when the run is a guest on it (`guest_run`): trio's calls to the
        loop from that thread skip the loop's wake-up pipe (`call_soon`)."""
        self._to_run: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        """Calls the trio thread handed to the loop (`_to_loop`) that it has not run yet."""
        self._drain_due = False
        """A `_drain` is scheduled on the loop and has not begun: a call handed over now rides
        in it, with no wake-up of its own."""
        self._workers: CallWorkers | None = None
        """With a thread of its own, while the work nursery is open: `run` hands its calls to
        trio tasks waiting for them (`call_workers`)."""
        self._guest: GuestRun | None = None
        """The guest run, when it is one: `run` starts its trio task in place (no write to
        trio's wake-up socket)."""

    @property
    def running(self) -> bool:
        """True between a successful `start()` and the beginning of `stop()`."""
        return self._nursery is not None and not self._stopping

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that owns this thread."""
        if self._loop is None:
            raise HostClosed("trio thread not started")
        return self._loop

    async def start(self, service: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        """Start the thread, enter `service()` on it and open the work nursery.

        Raises:
            P2PError: entering the service failed; the cause is chained and the thread is gone.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[None] = loop.create_future()
        self._finished = loop.create_future()
        if not (self._on_loop and self._may_be_a_guest() and self._start_on_loop(service, ready)):
            self._thread = threading.Thread(
                target=self._thread_main, args=(service, ready), name=self._name, daemon=True
            )
            self._thread.start()
        try:
            await asyncio.shield(ready)
        except BaseException:
            # Failed or cancelled start: make sure the thread is gone before we return.
            self._request_stop()
            await self._join()
            raise

    def _may_be_a_guest(self) -> bool:
        """False when this thread is in another network namespace than the one this module was
        imported in: it switched, and will likely switch back (a host started in netlab's
        `in_netns`), so the run takes a thread, which stays where it starts."""
        if _thread_network_namespace() == _IMPORTED_IN_NAMESPACE:
            return True
        log.info("trio for %s runs in a thread: started in another network namespace", self._name)
        return False

    def _start_on_loop(
        self,
        service: Callable[[], AbstractAsyncContextManager[None]],
        ready: asyncio.Future[None],
    ) -> bool:
        """Start the run as a guest on this (the loop's) thread; False if one runs here or
        this trio is not the one `guest_run` was written for."""

        def done(result: outcome.Outcome[None]) -> None:
            self._ended(ready, result.error if isinstance(result, outcome.Error) else None)

        guest = start_guest_on_loop(self.loop, self._trio_main, service, ready, done_callback=done)
        if guest is None:
            log.info("trio for %s runs in a thread of its own", self._name)
            return False
        self._guest, self._guest_thread = guest, threading.get_ident()
        return True

    def _thread_main(
        self,
        service: Callable[[], AbstractAsyncContextManager[None]],
        ready: asyncio.Future[None],
    ) -> None:
        error: BaseException | None = None
        try:
            trio.run(self._trio_main, service, ready)
        except BaseException as exc:  # surfaced to asyncio by `_ended`, never swallowed
            error = exc
        self._ended(ready, error)

    def _ended(self, ready: asyncio.Future[None], error: BaseException | None) -> None:
        """The run returned (`error` None) or raised: tell `start` and `stop` (from either the
        run's thread or, for a guest run, the loop's)."""
        if error is not None and ready.done() and _only_a_closing_race(error):
            log.info("trio run %s: libp2p took a stream while closing", self._name)
            error = None
        elif error is not None and not self._stopping and ready.done():
            # Whoever waits in `wait_ended` reports it (the node logs it once, as its fault).
            log.warning("trio run %s ended unasked: %s", self._name, type(error).__name__)
        elif error is not None:
            log.error("trio run %s failed: %r", self._name, error, exc_info=error)
        finished = self._finished
        assert finished is not None

        def report() -> None:
            if not ready.done():
                failure: HostClosed | P2PError
                if error is None:
                    failure = HostClosed(f"trio thread {self._name} stopped before it was ready")
                else:
                    failure = P2PError(f"trio thread {self._name} failed to start: {error!r}")
                    failure.__cause__ = error
                ready.set_exception(failure)
            if not finished.done():
                if error is None:
                    finished.set_result(None)
                else:
                    finished.set_exception(error)

        self._to_loop(report)

    async def _trio_main(
        self,
        service: Callable[[], AbstractAsyncContextManager[None]],
        ready: asyncio.Future[None],
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        # A guest run starts the loop's calls in place (`GuestRun.call_now`); one in a thread
        # of its own has workers waiting for them (`call_workers`).
        in_thread = self._thread is not None and threading.current_thread() is self._thread
        workers = CallWorkers() if in_thread else None
        try:
            async with service(), trio.open_nursery() as nursery:
                self._nursery = nursery
                if workers is not None:
                    workers.start(nursery)
                    self._workers = workers
                try:
                    self._to_loop(_mark_ready, ready)
                    await self._stop_event.wait()
                finally:
                    # Also when a failed task cancelled this wait: the nursery then closes while
                    # the service still exits, and a call started there would kill trio itself.
                    self._nursery = None
                    self._workers = None
                    if workers is not None:
                        workers.close()
                nursery.cancel_scope.cancel()
        finally:
            if workers is not None:
                workers.close_sockets()

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Schedule `fn(*args)` on the loop, after every call handed over before it. From
        another thread the calls queue, and only the first since the loop's last `_drain`
        wakes it (`call_soon_threadsafe`: a write to its wake-up pipe, and a release of the GIL
        that the waiting thread takes): a trio pass that settles several calls costs one."""
        loop = self._loop
        if loop is None or loop.is_closed():  # nobody is left to tell
            log.debug("asyncio loop closed; dropped callback %r", fn)
            return False
        if threading.get_ident() == self._guest_thread:
            loop.call_soon(fn, *args)
            return True
        self._to_run.append((fn, args))
        if self._drain_due:
            return True
        self._drain_due = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # closed since
            log.debug("asyncio loop closed; dropped callback %r", fn)
            return False
        return True

    def _drain(self) -> None:
        """On the loop: run the calls handed over, oldest first. The flag drops before the
        first is taken, so a call handed over meanwhile is either taken here or wakes the loop
        again: none is left behind."""
        self._drain_due = False
        calls = self._to_run
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception as exc:  # reported as the loop reports a failed callback
                self.loop.call_exception_handler(
                    {"message": f"Exception in callback {fn!r} from trio", "exception": exc}
                )

    def to_asyncio(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From the trio thread, schedule `fn(*args)` on the asyncio loop; False if it is gone."""
        return self._to_loop(fn, *args)

    def run_sync_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule the sync `fn(*args)` on the trio thread (FIFO with every other call).

        Raises:
            HostClosed: the thread is stopping or gone.
        """
        token = self._token
        if token is None or self._stopping:
            raise HostClosed(f"trio thread {self._name} is not running")
        workers = self._workers
        if workers is not None:  # in line with `run`'s calls, which go there too
            workers.submit_sync(fn, *args)
            return
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError as exc:
            raise HostClosed(f"trio thread {self._name} has exited") from exc

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """On the trio thread: start a task owned by the work nursery (ends at `stop()`)."""
        nursery = self._nursery
        if nursery is None:
            raise HostClosed(f"trio thread {self._name} is stopping")
        nursery.start_soon(fn, *args)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the trio thread and return its result.

        Exceptions raised by `fn` are re-raised here unchanged. Cancelling the caller cancels
        the trio task.

        Raises:
            HostClosed: the thread stopped before `fn` finished.
        """
        call: _Call[T] = _Call(self.loop)

        async def task() -> None:
            ok: bool = False
            value: Any = None
            try:
                with trio.CancelScope() as scope:
                    call.scope = scope
                    if call.cancel_requested:
                        scope.cancel()
                    try:
                        ok, value = True, await fn(*args)
                    except Exception as exc:
                        ok, value = False, exc
            finally:
                if value is None and not ok:
                    value = HostClosed(f"trio thread {self._name} stopped during the call")
                self._to_loop(_settle, call, ok, value)

        def refuse() -> None:
            self._to_loop(_settle, call, False, HostClosed("trio thread is stopping"))

        def start() -> None:
            nursery = self._nursery
            if nursery is None:
                refuse()
            else:
                nursery.start_soon(task)

        guest, workers = self._guest, self._workers
        in_place = (
            guest is not None
            and not self._stopping
            and threading.get_ident() == self._guest_thread
            and guest.call_now(start)
        )
        if in_place:
            pass
        elif workers is not None and not self._stopping:
            workers.submit(task, refuse)
        else:
            self.run_sync_soon(start)
        try:
            return await call.result
        except asyncio.CancelledError:
            with contextlib.suppress(HostClosed):
                self.run_sync_soon(call.cancel_on_trio)
            # Wait until the trio side has unwound so no work outlives its caller.
            await asyncio.wait([call.finished], timeout=CANCEL_GRACE_S)
            raise

    def _request_stop(self) -> None:
        self._stopping = True
        token, event = self._token, self._stop_event
        if token is None or event is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(event.set)

    async def _join(self) -> None:
        """Wait until the run has ended; a cancelled caller still waits (the stop was already
        requested, so the wait is bounded) and gets its CancelledError afterwards, so nothing
        of trio runs on behind a cancelled `stop()`."""
        finished, thread = self._finished, self._thread
        cancelled = False
        while finished is not None and not finished.done():
            try:
                await asyncio.wait([finished])
            except asyncio.CancelledError:
                cancelled = True
        if finished is not None and not finished.cancelled():
            finished.exception()  # marks it retrieved: `stop()` or `start()` reports it
        if thread is not None:
            # trio.run has returned when `finished` is set, so this join is immediate.
            thread.join()
        if cancelled:
            raise asyncio.CancelledError

    async def wait_ended(self) -> BaseException | None:
        """Wait until the run has ended; what ended it unasked (before `stop` asked): the error
        that escaped, or `HostClosed` if it returned; None if `stop` asked. An error returned
        here counts as reported: `stop` raises it no more.

        Raises:
            HostClosed: the run was never started.
        """
        finished = self._finished
        if finished is None:
            raise HostClosed(f"trio thread {self._name} not started")
        await asyncio.wait([finished])
        if self._stopping:
            return None
        self._reported = True
        error = None if finished.cancelled() else finished.exception()
        return error or HostClosed(f"trio thread {self._name} returned unasked")

    async def stop(self) -> None:
        """Cancel the work nursery, exit the service, end `trio.run` and join the thread.

        Raises:
            P2PError: the trio thread failed and `wait_ended` did not report it (the original
                error is chained).
        """
        self._request_stop()
        finished = self._finished
        await self._join()
        if finished is not None and finished.done() and not finished.cancelled():
            error = finished.exception()
            if error is not None and not self._reported:
                raise P2PError(f"trio thread {self._name} failed: {error!r}") from error


def _only_a_closing_race(error: BaseException) -> bool:
    """py-libp2p 0.8.1 may accept a stream while its service nursery closes (pubsub, at stop):
    trio refuses the task with this RuntimeError. Nothing of ours was lost, so stopping is clean.
    """
    if not isinstance(error, BaseExceptionGroup):
        return False
    _, rest = error.split(
        lambda e: isinstance(e, RuntimeError) and "Nursery is closed to new arrivals" in str(e)
    )
    return rest is None
