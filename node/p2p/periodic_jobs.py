"""A host's periodic jobs, counted and metered in CPU apart from everything else it does (SPEC
§20.6): its AutoNAT rounds, the dial-backs it makes for peers' AutoNAT requests, and kad's
routing-table refresh.

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); all of it
runs on the trio thread but `snapshot`. Why: an AutoNAT round (every 300 s) or a kad refresh
(every 600 s) costs a node about as much CPU as ten workload messages, and a scale run's phases
meet them at different ages of the mesh, so a phase's CPU a message moved by a whole round
between sizes. Knowing each job's runs and CPU in a phase, `simulate --scale` takes them out.

How: a job runs inside `PeriodicJobs.running(job)`, which names the job in a context variable;
trio gives each task a copy of its spawner's context, so the tasks the job starts carry the
name too. While any job runs, a trio instrument adds the thread CPU of each step of a task
carrying a name to that job (two clock reads a step of every task, only then; between jobs
no instrument is installed and nothing is read). What the job makes other tasks do is not
its own: the peer's side of a dial-back (its Noise handshake in the listener's task) and the
kad peers' answers count as the tasks they run in, so the figures are a floor.

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

_JOB: Final[ContextVar[str | None]] = ContextVar("hearthmesh_periodic_job", default=None)


@dataclass(slots=True)
class JobCost:
    runs: int = 0
    cpu_ns: int = 0
    """Thread CPU of the job's task steps (see the module: a floor)."""


class PeriodicJobs:
    """The periodic jobs of one host (trio thread)."""

    def __init__(self) -> None:
        self.jobs: Final = {job: JobCost() for job in JOBS}
        self._running = 0
        self._meter = _StepMeter(self.jobs)

    @contextlib.contextmanager
    def running(self, job: str) -> Iterator[None]:
        """Count one run of `job` and meter the CPU of this task's steps and its children's
        until the block ends."""
        self.jobs[job].runs += 1
        token = _JOB.set(job)
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
            _JOB.reset(token)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Each job's runs and CPU seconds so far (any thread: reads of ints)."""
        return {
            job: {"runs": cost.runs, "cpu_s": round(cost.cpu_ns / 1e9, 4)}
            for job, cost in self.jobs.items()
        }


class _StepMeter(trio.abc.Instrument):
    """Adds the thread CPU of each step of a task whose context names a job to that job."""

    def __init__(self, jobs: dict[str, JobCost]) -> None:
        self._jobs = jobs
        self._job: str | None = None
        self._began_ns = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._job = task.context.get(_JOB)
        if self._job is not None:
            self._began_ns = time.thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step_ended()

    def step_ended(self) -> None:
        # The job named before the step: the step that ends a job's block still is its own.
        if self._job is not None:
            self._jobs[self._job].cpu_ns += time.thread_time_ns() - self._began_ns
            self._job = None
