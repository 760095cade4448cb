"""A host's periodic jobs, counted and metered in CPU apart from everything else it does (SPEC
§20.6): its AutoNAT rounds, the dial-backs it makes for peers' AutoNAT requests, and kad's
routing-table refresh.

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); all of it
runs on the trio thread but `snapshot`. Why: a kad refresh (every 600 s) cost a 50-node mesh's
node 0.26 CPU s, about ten workload messages, an AutoNAT round (every 300 s) with the 8
dial-backs it asks of others 0.05-0.07 s, and a scale run's phases meet them at different ages
of the mesh, so a phase's CPU a message moved by a whole round between sizes. Knowing each
job's runs and CPU in a phase, `simulate --scale` takes them out.

How: a job runs inside `PeriodicJobs.running(job)`, which names the job in a context variable;
trio gives each task a copy of its spawner's context, so the tasks the job starts carry the
name too. While any job runs, a trio instrument adds the thread CPU of each step of a task
carrying a name to that job while its run is open (two hook calls a step of every task and
two clock reads a step of a job's, only then; between jobs no instrument is installed). What
the job makes other tasks do is not its own: the peer's side of a dial-back (its Noise
handshake in the listener's task) and the kad peers' answers count as the tasks they run in,
so the figures are a floor.

State: per job, its runs and CPU nanoseconds; the jobs running now.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import trio

__all__ = ["AUTONAT_ROUND", "DIAL_BACK", "JOBS", "KAD_REFRESH", "JobCost", "PeriodicJobs"]

AUTONAT_ROUND: Final = "autonat_round"
"""One of our AutoNAT rounds: up to 8 servers asked to dial us back (SPEC §10.6)."""
DIAL_BACK: Final = "autonat_dial_back"
"""A peer's AutoNAT request we served: a fresh connection and Noise handshake to it."""
KAD_REFRESH: Final = "kad_refresh"
"""py-libp2p's routing-table refresh (FIND_NODE walks), at the start and every 10 minutes."""
JOBS: Final = (AUTONAT_ROUND, DIAL_BACK, KAD_REFRESH)


@dataclass(slots=True)
class JobCost:
    runs: int = 0
    cpu_ns: int = 0
    """Thread CPU of the job's task steps (see the module: a floor)."""


@dataclass(slots=True)
class _Run:
    """One run of a job, named in the context of its task and of the tasks it starts."""

    cost: JobCost
    open: bool = True
    """A task the run started may outlive it (a connection's reader): charged only while
    the run is open, not to the job during a later run of any job."""


_JOB: Final[ContextVar[_Run | None]] = ContextVar("hearthmesh_periodic_job", default=None)


class PeriodicJobs:
    """The periodic jobs of one host (trio thread)."""

    def __init__(self) -> None:
        self.jobs: Final = {job: JobCost() for job in JOBS}
        self._running = 0
        self._meter = _StepMeter()

    @contextlib.contextmanager
    def running(self, job: str) -> Iterator[None]:
        """Count one run of `job` and meter the CPU of this task's steps and its children's
        until the block ends."""
        self.jobs[job].runs += 1
        run = _Run(self.jobs[job])
        token = _JOB.set(run)
        if self._running == 0:
            self._meter.step_ended()  # nothing is being metered (a step left over: dropped)
            trio.lowlevel.add_instrument(self._meter)
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._meter.step_ended()  # this step: its after-hook will not be called
                trio.lowlevel.remove_instrument(self._meter)
            run.open = False
            _JOB.reset(token)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Each job's runs and CPU seconds so far (any thread: reads of ints)."""
        return {
            job: {"runs": cost.runs, "cpu_s": round(cost.cpu_ns / 1e9, 4)}
            for job, cost in self.jobs.items()
        }


class _StepMeter(trio.abc.Instrument):
    """Adds the thread CPU of each step of a task whose context names an open run to its job."""

    def __init__(self) -> None:
        self._run: _Run | None = None
        self._began_ns = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        run = task.context.get(_JOB)
        self._run = run if run is not None and run.open else None
        if self._run is not None:
            self._began_ns = time.thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step_ended()

    def step_ended(self) -> None:
        # The run named before the step: the step that ends a job's block still is its own.
        if self._run is not None:
            self._run.cost.cpu_ns += time.thread_time_ns() - self._began_ns
            self._run = None
