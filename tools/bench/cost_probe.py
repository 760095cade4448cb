"""What a node costs per message in figures a loaded machine does not move: each thread's CPU
and the loop thread's calls by kind (issue #13; `bench send-counts` and `bench delivery-cost`).

A window is opened and closed around N messages. Each window records every thread's CPU time
(`/proc/self/task/*/schedstat`, ns on a CPU: the waits for the GIL or a core are not in it),
grouped as the loop, the trio thread, the store's threads and the rest, the loop thread's own
user and system time (`getrusage`: the system part is mostly the kernel's work for a commit made
on the loop's thread), and the tasks the loop created (a counting task factory: uvloop's
`create_task` is C, which the profiler does not see). A counted window also runs cProfile on the
loop's thread, and on the trio thread when it has one of its own, for call counts by kind
(`CATEGORIES`, `TRIO_CATEGORIES`); cProfile's own cost makes that window's CPU no figure, so the
CPU is a plain window's. A node process (`hearthmesh run`,
`tools/node_process.py`) opens a window on `WINDOW_START` and closes it on `WINDOW_END` when the
environment names a file in `COST_ENV`, and appends each window's figures there as a JSON line;
its windows alternate plain, counted, plain, ...
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import cProfile
import json
import os
import pstats
import re
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hearthmesh.node.node import Node

__all__ = [
    "CATEGORIES",
    "COST_ENV",
    "PSTATS_ENV",
    "WINDOW_END",
    "WINDOW_START",
    "CostWindow",
    "by_kind",
    "node_windows",
    "per_message",
    "plain_and_counted",
    "read_windows",
    "serve_windows",
    "store_counters",
    "thread_cpu_s",
    "trio_thread_of",
]

COST_ENV: Final = "HEARTHMESH_COST_FILE"
PSTATS_ENV: Final = "HEARTHMESH_COST_PSTATS"
"""A directory: each counted window's whole profile is dumped there too (`pid-n.pstats`), to
read who called what (`python -m pstats`)."""
WINDOW_START: Final = signal.SIGUSR1
WINDOW_END: Final = signal.SIGUSR2

CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "strict_decodes": ("protocol/canonical.py:decode_canonical",),
    "cbor_loads": ("<built-in method cbor2._cbor2.loads>", "cbor2/_decoder.py:loads"),
    "cbor_dumps": ("<built-in method cbor2._cbor2.dumps>", "cbor2/_encoder.py:dumps"),
    "envelope_parses": ("protocol/envelope.py:_parse",),
    "signature_verifies": ("protocol/identity.py:verify_signature",),
    "signs": ("protocol/identity.py:sign",),
    "megolm_decrypts": ("<method 'decrypt' of 'builtins.InboundGroupSession' objects>",),
    "overlay_reads": ("storage/staged.py:get", "storage/staged.py:scan"),
    "staged_writes": (
        "storage/staged.py:put",
        "storage/staged.py:insert",
        "storage/staged.py:delete",
    ),
    "lmdb_gets": ("<method 'get' of 'Transaction' objects>",),
    "lmdb_puts": (
        "<method 'put' of 'Transaction' objects>",
        "<method 'putmulti' of 'Cursor' objects>",
    ),
    "lmdb_cursors": ("<method 'cursor' of 'Transaction' objects>",),
    "lmdb_txns": ("<method 'begin' of 'Environment' objects>",),
    "staged_batches": ("storage/lmdb_store.py:stage_batch",),
    "commits_in_place": ("storage/async_store.py:_commit_inline",),
    "store_flushes": ("storage/async_store.py:_flush",),
    "to_other_threads": ("concurrent/futures/thread.py:submit",),
    "to_trio": ("node/p2p/call_workers.py:_put",),
    "to_loop_drains": ("node/p2p/bridge.py:_drain",),
    "json_frames_out": ("json/encoder.py:encode",),
    "json_frames_in": ("json/__init__.py:loads",),
    "feed_passes": ("node/api/feed.py:_take_told",),
    "feed_log_reads": ("storage/arrivals.py:arrivals_after_txn",),
}
"""Kind → the functions whose calls it sums, as `_label` names them (`path:function` from the
package or site-packages down, a built-in by cProfile's own description; cbor2's C and pure
builds each named). Only plain functions: cProfile counts each resumption of a coroutine as a
call. `to_other_threads` is the submits to the store's writer and reader threads, `to_trio` every
call handed to the trio thread (`TrioThread.run` and `run_sync_soon` alike); `feed_passes` the
client feed's publishing passes (its tail task's, and a send's `catch_up`), `feed_log_reads` its
pages read from the arrival log; `tasks_created`
(added to these) is the counting task factory's."""

TRIO_CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "lock_acquires": ("node/p2p/quick_locks.py:acquire",),
    "scheduler_passes": ("trio/_core/_io_epoll.py:get_events",),
    "socket_sends": ("<method 'send' of '_socket.socket' objects>",),
    "socket_recvs": ("<method 'recv' of '_socket.socket' objects>",),
    "to_loop_wakeups": (
        "<method 'call_soon_threadsafe' of 'uvloop.loop.Loop' objects>",
        "asyncio/base_events.py:call_soon_threadsafe",
    ),
    "debug_logs": ("logging/__init__.py:debug",),
}
"""`CATEGORIES` for the trio thread: the locks taken (py-libp2p's, each a `QuickLock` since
the host swapped it, and ours), trio's scheduler passes (each polls epoll), the socket calls,
the wake-ups of the loop and py-libp2p's debug log calls (formatted whether logged or not)."""

_WAIT_S: Final = 10.0
_TOP: Final = 40
_dumped = [0]
_ROOTS: Final = re.compile(r".*/(?:hearthmesh|site-packages|python3\.\d+)/")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads so far, grouped: loop, trio, store, other."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    groups: dict[str, float] = collections.defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:  # nanoseconds on the CPU: /proc's stat counts 10 ms ticks, coarse for idle
            with open(f"/proc/self/task/{tid}/schedstat") as stat:
                on_cpu_ns = int(stat.read().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "")
        group = (
            "loop"
            if name == "MainThread"
            else "trio"
            if name.startswith("libp2p-")
            else "store"
            if name.startswith("hearthmesh-store")
            else "other"
        )
        groups[group] += on_cpu_ns / 1e9
    return groups


def _loop_user_system_s() -> tuple[float, float]:
    used = resource.getrusage(resource.RUSAGE_THREAD)
    return used.ru_utime, used.ru_stime


def by_kind(
    calls: Mapping[str, int], categories: Mapping[str, tuple[str, ...]] = CATEGORIES
) -> dict[str, int]:
    """The calls of each of `categories`, from the calls of each function (by `_label`)."""
    return {
        kind: sum(calls.get(label, 0) for label in labels) for kind, labels in categories.items()
    }


def trio_thread_of(node: Node) -> Callable[[Callable[[], object]], None] | None:
    """What runs a function on `node`'s trio thread, if trio has a thread of its own (as a
    guest of the loop its calls are the loop thread's)."""
    bridge = node._host._bridge  # a probe reads the node's insides
    return None if bridge._guest is not None else bridge.run_sync_soon


def store_counters(node: Node) -> dict[str, int]:
    """The store's write batches and transactions so far (each transaction one durable commit)."""
    return {"transactions": node.store.transactions, "batches": node.store.batches_committed}


def _label(func: tuple[str, int, str]) -> str:
    """A function as `CATEGORIES` names it: the same anywhere the package is installed."""
    file, _, name = func
    return name if file == "~" else f"{_ROOTS.sub('', file, count=1)}:{name}"


TaskFactory = Callable[..., "asyncio.Future[Any]"]


def _counted(
    profile: cProfile.Profile, categories: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    """A profile's calls: all, by kind, and the most called functions."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls: dict[str, int] = collections.Counter()
    for func, row in stats.items():
        calls[_label(func)] += row[1]  # primitive + recursive
    return {
        "python_calls": sum(calls.values()),
        "calls": by_kind(calls, categories),
        "top_calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])[:_TOP]),
    }


class CostWindow:
    """One window: CPU per thread group from `open` to `close`, the tasks the running loop
    created, and, when `counted`, the loop thread's calls (cProfile runs on the thread that
    opens the window, which must close it) and the trio thread's (`trio` runs a function
    there: `trio_thread_of`)."""

    def __init__(
        self,
        *,
        counted: bool,
        counters: Callable[[], dict[str, int]] | None = None,
        trio: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        self._counters = counters
        self._before = counters() if counters is not None else {}
        self._tasks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # no loop running here: no tasks to count
            self._loop = asyncio.get_running_loop()
        self._factory = None if self._loop is None else self._loop.get_task_factory()
        if self._loop is not None:
            self._loop.set_task_factory(self._counting)
        # its timer is the thread's CPU, so a dumped profile charges no GIL wait to a function
        self._profile = cProfile.Profile(time.thread_time_ns, 1e-9) if counted else None
        self._trio = trio if counted else None
        self._trio_profile = cProfile.Profile(time.thread_time_ns, 1e-9)
        self._cpu0 = thread_cpu_s()
        self._rusage0 = _loop_user_system_s()
        if self._trio is not None:  # queued ahead of the window's first call into trio
            self._trio(self._trio_profile.enable)
        if self._profile is not None:
            self._profile.enable()

    def _counting(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Makes a task as the loop's own factory would, counting it."""
        self._tasks += 1
        if self._factory is not None:
            return self._factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    def _trio_calls(self) -> dict[str, Any] | None:
        """The trio thread's calls, once its profile stopped there (None if it did not)."""
        if self._trio is None:
            return None
        stopped = threading.Event()

        def stop() -> None:
            self._trio_profile.disable()
            stopped.set()

        self._trio(stop)
        if not stopped.wait(_WAIT_S):
            return None
        if where := os.environ.get(PSTATS_ENV):
            self._trio_profile.dump_stats(Path(where) / f"{os.getpid()}-{_dumped[0]}-trio.pstats")
        return _counted(self._trio_profile, TRIO_CATEGORIES)

    def close(self) -> dict[str, Any]:
        """The window's totals: `cpu_s` by group, the loop thread's `loop_cpu_s` (user and
        system), `tasks_created`, with `calls` (by kind, and the most called functions) when
        counted, and how far each of `counters` moved meanwhile."""
        if self._profile is not None:
            self._profile.disable()
        user1, system1 = _loop_user_system_s()
        cpu1 = thread_cpu_s()  # before the wait for the trio thread's profile
        if self._loop is not None:
            self._loop.set_task_factory(self._factory)
        figures: dict[str, Any] = {
            "cpu_s": {g: cpu1[g] - self._cpu0.get(g, 0.0) for g in sorted(cpu1)},
            "loop_cpu_s": {"user": user1 - self._rusage0[0], "system": system1 - self._rusage0[1]},
            "tasks_created": self._tasks,
        }
        if self._profile is not None:
            if where := os.environ.get(PSTATS_ENV):
                _dumped[0] += 1
                self._profile.dump_stats(Path(where) / f"{os.getpid()}-{_dumped[0]}.pstats")
            figures.update(_counted(self._profile, CATEGORIES))
        if (trio := self._trio_calls()) is not None:
            figures["trio"] = trio
        if self._counters is not None:
            after = self._counters()
            figures["counters"] = {k: v - self._before.get(k, 0) for k, v in after.items()}
        return figures


def per_message(window: dict[str, Any], messages: int) -> dict[str, Any]:
    """A window's totals divided by the messages it saw (CPU in µs, calls per message)."""
    cpu = window.get("cpu_s", {})
    out: dict[str, Any] = {
        "cpu_us_per_msg": {g: round(s * 1e6 / messages, 1) for g, s in cpu.items()},
    }
    out["cpu_us_per_msg"]["all"] = round(sum(cpu.values()) * 1e6 / messages, 1)
    for part, s in window.get("loop_cpu_s", {}).items():
        out["cpu_us_per_msg"][f"loop_{part}"] = round(s * 1e6 / messages, 1)
    for prefix, counted in (("", window), ("trio_", window.get("trio", {}))):
        if "calls" in counted:
            out[f"{prefix}python_calls_per_msg"] = round(counted["python_calls"] / messages, 1)
            out[f"{prefix}calls_per_msg"] = {
                k: round(v / messages, 2) for k, v in counted["calls"].items()
            }
            out[f"{prefix}top_calls_per_msg"] = {
                k: round(v / messages, 2) for k, v in counted["top_calls"].items()
            }
    if "calls" in window:
        out["calls_per_msg"]["tasks_created"] = round(window["tasks_created"] / messages, 2)
    if "counters" in window:
        out["counters_per_msg"] = {k: round(v / messages, 3) for k, v in window["counters"].items()}
    return out


def plain_and_counted(
    plain: dict[str, Any], counted: dict[str, Any], messages: int
) -> dict[str, Any]:
    """One home's figures per message: the CPU of the plain window, the rest of the counted."""
    figures = per_message(counted, messages)
    figures["cpu_us_per_msg"] = per_message(plain, messages)["cpu_us_per_msg"]
    return figures


def node_windows(node: Node) -> contextlib.AbstractAsyncContextManager[None]:
    """The hook a node process (`hearthmesh run`, `tools/node_process.py`) runs its node in:
    `serve_windows` with the store's counters and its trio thread."""
    return serve_windows(partial(store_counters, node), trio_thread_of(node))


@contextlib.asynccontextmanager
async def serve_windows(
    counters: Callable[[], dict[str, int]],
    trio: Callable[[Callable[[], object]], None] | None = None,
) -> AsyncIterator[None]:
    """While the block runs, if `COST_ENV` names a file: open a window on `WINDOW_START` and
    close it on `WINDOW_END`, appending its figures (with how far `counters` moved) to that
    file as a JSON line (and `{"opened": n}` as the n-th opens); the first window is plain,
    the next counted, and so on. Nothing is installed otherwise."""
    where = os.environ.get(COST_ENV)
    if not where:
        yield
        return
    loop = asyncio.get_running_loop()
    open_now: list[CostWindow] = []
    windows = [0]

    def start() -> None:
        if not open_now:
            counted = windows[0] % 2 == 1
            open_now.append(CostWindow(counted=counted, counters=counters, trio=trio))
            windows[0] += 1
            with Path(where).open("a") as out:  # the bench waits for this before it sends
                out.write(json.dumps({"opened": windows[0]}) + "\n")

    def end() -> None:
        if open_now:
            figures = open_now.pop().close()
            with Path(where).open("a") as out:  # a few KB, once a window
                out.write(json.dumps(figures) + "\n")

    loop.add_signal_handler(WINDOW_START, start)
    loop.add_signal_handler(WINDOW_END, end)
    try:
        yield
    finally:
        loop.remove_signal_handler(WINDOW_START)
        loop.remove_signal_handler(WINDOW_END)
        end()  # a window left open is closed with the node, not leaked as a task factory


def _read(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""  # a few lines: no thread for it
    # complete lines only: a window's line of a few KB may be read while it is being written
    # (the suite once read half of one and failed on its JSON)
    return [json.loads(line) for line in text.split("\n")[:-1]]


async def read_windows(path: Path, count: int) -> list[dict[str, Any]]:
    """The first `count` lines a node process wrote to its `COST_ENV` file, once it has."""
    async with asyncio.timeout(_WAIT_S):
        while True:
            lines = _read(path)
            if len(lines) >= count:
                return lines[:count]
            await asyncio.sleep(0.005)
