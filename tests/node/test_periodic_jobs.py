"""A host's periodic jobs metered apart (node/p2p/periodic_jobs.py, SPEC §15.5, §20.6), on a
real trio run."""

from __future__ import annotations

import time

import trio
import trio.lowlevel

from hearthmesh.node.p2p.periodic_jobs import AUTONAT_ROUND, KAD_REFRESH, PeriodicJobs

STEPS = 10
BURN_S = 0.002


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_task_a_job_started_is_charged_while_the_run_is_open_and_not_after() -> None:
    """A task the kad refresh started (as a connection's reader would be) burns 10 steps of
    2 ms of thread CPU during the refresh, which is charged for them, and 10 more during a
    later AutoNAT round, which charges neither job for them (fails if a leftover task's name
    still charges its old job). Counted in steps, not wall time: the same under any load."""

    async def main() -> tuple[int, int, int]:
        jobs = PeriodicJobs()
        steps = 0
        async with trio.open_nursery() as nursery:

            async def leftover() -> None:
                nonlocal steps
                while True:
                    _burn(BURN_S)
                    steps += 1
                    await trio.lowlevel.checkpoint()

            async def until(count: int) -> None:
                while steps < count:
                    await trio.lowlevel.checkpoint()

            with jobs.running(KAD_REFRESH):
                nursery.start_soon(leftover)
                await until(STEPS)
            refresh = jobs.jobs[KAD_REFRESH].cpu_ns
            with jobs.running(AUTONAT_ROUND):
                await until(steps + STEPS)
            nursery.cancel_scope.cancel()
        counts = jobs.snapshot()
        assert counts[KAD_REFRESH]["runs"] == counts[AUTONAT_ROUND]["runs"] == 1
        return refresh, jobs.jobs[KAD_REFRESH].cpu_ns, jobs.jobs[AUTONAT_ROUND].cpu_ns

    refresh, after, autonat = trio.run(main)
    assert refresh >= STEPS * BURN_S * 1e9  # the leftover's steps while the refresh ran
    assert after == refresh  # its steps after the refresh ended are nobody's
    assert autonat < STEPS * BURN_S * 1e9 / 2  # the round's own checkpoints only
