"""trio as a guest on the asyncio loop's thread, waiting for I/O in the loop's own wait
(ARCHITECTURE §5).

trio's guest mode (`trio.lowlevel.start_guest_run`) runs trio's scheduler ticks as callbacks
of the host loop, but waits for I/O in a helper thread (`start_thread_soon(get_events)`) that
hands each wake-up back to the loop: on this project's loaded machines that hand-over cost the
cross-node path more than one shared thread saved (ARCHITECTURE §5). Here the loop does the
waiting: it watches trio's epoll descriptor (`loop.add_reader`) and trio's next deadline
(`loop.call_at`); when either fires, trio's events are polled without blocking and its next
tick runs, all on the loop's thread. Measured in MEASUREMENTS §5.3: with the disk's sync on it
was slower than trio's own thread on this project's machines, so it runs only where
`NodeConfig.trio_on_loop` asks for it.

State owned: one `_LoopIO` per guest run, holding the run's `GuestState`, whether trio is
waiting (and the deadline's timer), from `start_guest_run` until the run ends.

This drives trio's private guest machinery, so it is confined to this module and checked when
a run starts: `start_guest_on_loop` returns False (and the caller runs trio in a thread of its
own) when trio is not the version it was written for, `WRITTEN_FOR_TRIO`. What it relies on
(trio 0.35.0, `trio/_core/_run.py` and `_io_epoll.py`):

- `start_guest_run` ends by handing `guest_state.guest_tick` to `run_sync_soon_not_threadsafe`
  and calls neither callback again except from `guest_tick`, which we never call: the bound
  method's `__self__` is the `GuestState` whose ticks we run instead.
- A tick is `GuestState.guest_tick` without its thread: send `unrolled_run_next_send` into
  `unrolled_run_gen`, which yields how long trio would wait for I/O; then
  `runner.io_manager.get_events(0)`. While `runner.guest_tick_scheduled` is False, trio calls
  `runner.force_guest_tick_asap()` when it gets work (a task scheduled, a deadline moved),
  which writes to its wake-up socket, which is in its epoll set; `TrioToken.run_sync_soon`
  writes to the entry queue's socket, also in that set. So trio's epoll descriptor
  (`io_manager._epoll`: readable while one of its events is pending) becomes readable
  whenever trio has anything to do before its deadline.
- When the run ends, `unrolled_run_gen` raises StopIteration (the outcome is
  `runner.main_task_outcome`) or `TrioInternalError`, having closed the epoll descriptor.
- Between two ticks, on the run's thread, trio's scheduling calls work as in a task:
  `setup_runner` set `GLOBAL_RUN_CONTEXT.runner` for the thread, for the whole run, and
  `Nursery.start_soon` and `reschedule` only append to `runner.runq`; while
  `runner.guest_tick_scheduled` is True, `force_guest_tick_asap` writes nothing. So
  `GuestRun.call_now` schedules a tick itself and runs the caller's function in place: the
  loop's calls into trio (`TrioThread.run`) cost no write to trio's wake-up socket, no wait
  for the loop's next poll to see it, and no pass of trio's entry-queue task. While that
  queue holds calls (`runner.entry_queue.queue`, `idempotent_queue`), `call_now` goes
  through it instead, so calls keep the order they were made in.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import select
from collections.abc import Awaitable, Callable
from typing import Any, Final

import outcome
import trio
from sniffio import thread_local as sniffio_library

__all__ = ["WRITTEN_FOR_TRIO", "GuestRun", "start_guest_on_loop"]

log = logging.getLogger(__name__)

WRITTEN_FOR_TRIO: Final = "0.35.0"
"""The trio release whose private guest machinery `_LoopIO` drives (see the docstring)."""

_TIMER_SLACK_S: Final = 0.0005
"""A deadline timer within this of the wanted time is kept, not re-armed (a heap push each)."""


class _LoopIO:
    """Runs one guest run's ticks on the loop; trio's wait for I/O is the loop's own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: Any) -> None:
        self._loop = loop
        self._state = state
        self._runner = state.runner
        self._io = state.runner.io_manager
        epoll: select.epoll = self._io._epoll
        self._fd = epoll.fileno()
        self._waiting = False
        self._timer: asyncio.TimerHandle | None = None
        self._over = False
        loop.add_reader(self._fd, self._woken)

    def tick(self) -> None:
        """One pass of trio's run loop, then either the next tick soon or a wait."""
        state, runner = self._state, self._runner
        previous, sniffio_library.name = sniffio_library.name, "trio"
        try:
            timeout = state.unrolled_run_next_send.send(state.unrolled_run_gen)
        except StopIteration:
            self._ended(runner.main_task_outcome)
            return
        except trio.TrioInternalError as exc:
            self._ended(outcome.Error(exc))
            return
        finally:
            sniffio_library.name = previous
        events = outcome.capture(self._io.get_events, 0)
        if timeout <= 0 or isinstance(events, outcome.Error) or events.value:
            state.unrolled_run_next_send = events
            runner.guest_tick_scheduled = True
            self._loop.call_soon(self.tick)
            return
        # Nothing to do before `timeout`: trio's epoll descriptor (watched by the loop) wakes
        # us for I/O or new work, the timer for the deadline.
        runner.guest_tick_scheduled = False
        self._waiting = True
        when = self._loop.time() + timeout
        timer = self._timer
        if timer is None or abs(timer.when() - when) > _TIMER_SLACK_S:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._deadline)

    def _deadline(self) -> None:
        self._timer = None
        self._woken()

    def _woken(self) -> None:
        """trio's descriptor is readable or its deadline came: poll it and tick, if waiting
        (while ticks are scheduled, the next tick polls anyway)."""
        if not self._waiting:
            return
        self._waiting = False
        self._runner.guest_tick_scheduled = True
        self._poll_then_tick()

    def _poll_then_tick(self) -> None:
        self._state.unrolled_run_next_send = outcome.capture(self._io.get_events, 0)
        self.tick()

    def call_now(self, fn: Callable[[], object]) -> bool:
        """See `GuestRun.call_now`."""
        entries = self._runner.entry_queue
        if self._over or entries.queue or entries.idempotent_queue:
            return False
        if self._waiting:  # a tick is due now: trio's own wake-up would only ask for one
            self._waiting = False
            self._runner.guest_tick_scheduled = True
            self._loop.call_soon(self._poll_then_tick)
        # In a copy of trio's system context, as the entry queue's task runs its calls: tasks
        # started here copy that, not the calling asyncio task's context.
        self._runner.system_context.copy().run(fn)
        return True

    def _ended(self, result: outcome.Outcome[Any]) -> None:
        # trio closed the descriptor as the run ended; forget it before its number is reused.
        self._over = True
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state.done_callback(result)


class GuestRun:
    """A started guest run, as its starter sees it."""

    def __init__(self) -> None:
        self._io: _LoopIO | None = None

    def call_now(self, fn: Callable[[], object]) -> bool:
        """On the loop's thread, between two of trio's ticks: run `fn` here and now, where it
        may start trio tasks (`Nursery.start_soon`), with trio's next tick scheduled on the
        loop (see the module docstring). False, having run nothing, when calls wait in trio's
        entry queue (go through it too, in order: `TrioToken.run_sync_soon`) or this run's
        ticks are trio's own (the run was not the one expected)."""
        return self._io is not None and self._io.call_now(fn)


def _is_guest_tick(fn: Callable[[], object]) -> bool:
    state: Any = getattr(fn, "__self__", None)
    return (
        type(state).__name__ == "GuestState"
        and getattr(fn, "__name__", "") == "guest_tick"
        and all(
            hasattr(state, name)
            for name in ("runner", "unrolled_run_gen", "unrolled_run_next_send", "done_callback")
        )
        and isinstance(getattr(state.runner.io_manager, "_epoll", None), select.epoll)
        and hasattr(state.runner, "guest_tick_scheduled")
        and hasattr(getattr(state.runner, "entry_queue", None), "idempotent_queue")
        and hasattr(state.runner, "system_context")
    )


def start_guest_on_loop(
    loop: asyncio.AbstractEventLoop,
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    done_callback: Callable[[outcome.Outcome[Any]], None],
) -> GuestRun | None:
    """Start `async_fn(*args)` as a trio guest run on `loop`'s thread (which must be the
    caller's), its I/O waited for by the loop; `done_callback` gets the run's outcome.

    Returns None, having started nothing, when this trio is not `WRITTEN_FOR_TRIO` (logged as
    a warning: the caller should run trio in a thread) or this thread runs a trio run already.
    """
    installed = importlib.metadata.version("trio")
    if installed != WRITTEN_FOR_TRIO:
        log.warning(
            "trio %s is not %s, which the guest run on the loop was written for: "
            "libp2p's trio runs in a thread of its own",
            installed,
            WRITTEN_FOR_TRIO,
        )
        return None

    run = GuestRun()

    def soon_threadsafe(fn: Callable[[], object]) -> None:  # only trio's own I/O thread calls
        loop.call_soon_threadsafe(fn)

    first = True

    def soon(fn: Callable[[], object]) -> None:
        nonlocal first
        if first:  # the first tick, handed over at the end of `start_guest_run`
            first = False
            if _is_guest_tick(fn):
                run._io = _LoopIO(loop, getattr(fn, "__self__", None))
                loop.call_soon(run._io.tick)
                return
            log.warning("trio's guest run is not the one expected: its own I/O thread waits")
        loop.call_soon(fn)  # trio's own guest ticks: correct, only slower

    try:
        trio.lowlevel.start_guest_run(
            async_fn,
            *args,
            run_sync_soon_threadsafe=soon_threadsafe,
            run_sync_soon_not_threadsafe=soon,
            done_callback=done_callback,
            host_uses_signal_set_wakeup_fd=True,  # asyncio's signal handlers keep theirs
        )
    except RuntimeError:  # "Attempted to call run() from inside a run()"
        return None
    return run
