"""What a node's loop thread does in a window the benchmark opens: its CPU time and its calls.

`hearthmesh run` starts `count_path` when the environment names a file in `PATH_COUNTS_ENV`
(`bench send-counts` does, for alice's node; `tools/bench/send_counts.py` says what it counts
and why). The windows are opened and closed by signals, so the driver decides what is inside
one; the profiler runs only in a `COUNT_CALLS` window, since it slows what it watches. At exit
the windows are written to that file as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import re
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

__all__ = ["COUNT_CALLS", "COUNT_CPU", "COUNT_STOP", "PATH_COUNTS_ENV", "Window", "count_path"]

PATH_COUNTS_ENV: Final = "HEARTHMESH_PATH_COUNTS_FILE"
COUNT_CPU: Final = int(signal.SIGRTMIN)
"""Open a window that takes the loop thread's and the process's CPU time."""
COUNT_CALLS: Final = COUNT_CPU + 1
"""Open a window that also profiles the loop thread's calls."""
COUNT_STOP: Final = COUNT_CPU + 2
"""Close the open window."""

Window = dict[str, Any]


@contextlib.asynccontextmanager
async def count_path() -> AsyncIterator[None]:
    """While the block runs, if `PATH_COUNTS_ENV` names a file: between a `COUNT_CPU` or
    `COUNT_CALLS` signal and `COUNT_STOP`, measure this thread (the loop's); at the end write
    the windows there as JSON, in the order they closed."""
    where = os.environ.get(PATH_COUNTS_ENV)
    if not where:
        yield
        return
    loop = asyncio.get_running_loop()
    windows: list[Window] = []
    open_: list[tuple[tuple[int, int, int], TaskFactory | None, cProfile.Profile | None]] = []
    tasks = [0]  # created in the open window (one cell, which `_counting` adds to)

    def start(profiled: bool) -> None:
        if open_:
            return
        profiler = cProfile.Profile(time.thread_time_ns, 1e-9) if profiled else None
        tasks[0] = 0
        open_.append((_thread_cpu(), loop.get_task_factory(), profiler))
        loop.set_task_factory(_counting(loop.get_task_factory(), tasks))
        if profiler is not None:
            profiler.enable()  # this thread only: the loop's (signal handlers run on it)

    def stop() -> None:
        if not open_:
            return
        cpu, factory, profiler = open_.pop()
        if profiler is not None:
            profiler.disable()
        loop.set_task_factory(factory)
        user, system, process = (now - then for now, then in zip(_thread_cpu(), cpu, strict=True))
        window: Window = {
            "loop_user_ns": user,
            "loop_system_ns": system,
            "process_cpu_ns": process,
            "tasks_created": tasks[0],
        }
        if profiler is not None:
            window["calls"] = _calls(profiler)
            profiler.dump_stats(f"{where}.{len(windows)}.pstats")  # for a look at the callers
        windows.append(window)

    loop.add_signal_handler(COUNT_CPU, start, False)
    loop.add_signal_handler(COUNT_CALLS, start, True)
    loop.add_signal_handler(COUNT_STOP, stop)
    try:
        yield
    finally:
        for signum in (COUNT_CPU, COUNT_CALLS, COUNT_STOP):
            loop.remove_signal_handler(signum)
        stop()
        await asyncio.to_thread(Path(where).write_text, json.dumps(windows))


def _thread_cpu() -> tuple[int, int, int]:
    """This thread's user and system CPU time and the process's CPU time, in ns: the kernel's
    work for a commit made on the loop's thread (its writes and flushes) is the system part."""
    used = resource.getrusage(resource.RUSAGE_THREAD)
    return int(used.ru_utime * 1e9), int(used.ru_stime * 1e9), time.process_time_ns()


TaskFactory = Callable[..., "asyncio.Future[Any]"]


def _counting(factory: TaskFactory | None, tasks: list[int]) -> TaskFactory:
    """A task factory that counts the tasks it makes (uvloop's `create_task` is C, which the
    profiler does not see) and makes them as `factory` would."""

    def create(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        tasks[0] += 1
        if factory is not None:
            return factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    return create


def _calls(profiler: cProfile.Profile) -> dict[str, int]:
    """Calls per function, named `path:function` (C functions by cProfile's own label)."""
    profiler.create_stats()
    calls: dict[str, int] = {}
    for (filename, _line, function), (_primitive, count, *_) in profiler.stats.items():
        name = function if filename == "~" else f"{_short(filename)}:{function}"
        calls[name] = calls.get(name, 0) + count
    return calls


def _short(filename: str) -> str:
    """A source path from the package or site-packages down, so names read alike anywhere."""
    return _ROOTS.sub("", filename, count=1)


_ROOTS: Final = re.compile(r".*/(?:hearthmesh|site-packages|python3\.\d+)/")
