"""A host's periodic jobs metered apart (node/p2p/periodic_jobs.py, SPEC §15.5, §20.6), on a
real trio run."""

from __future__ import annotations

import time

import trio
import trio.lowlevel

from hearthmesh.node.p2p.periodic_jobs import AUTONAT_ROUND, KAD_REFRESH, PeriodicJobs


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_task_a_job_started_is_charged_while_the_run_is_open_and_not_after() -> None:
    """A task the kad refresh started (as a connection's reader would be) burns CPU during the
    refresh, which is charged for it, and again during a later AutoNAT round, which charges
    neither job for it (fails if a leftover task's name still charges its old job)."""

    async def main() -> tuple[int, int, int]:
        jobs = PeriodicJobs()
        async with trio.open_nursery() as nursery:

            async def leftover() -> None:
                while True:
                    _burn(0.002)
                    await trio.lowlevel.checkpoint()

            with jobs.running(KAD_REFRESH):
                nursery.start_soon(leftover)
                await trio.sleep(0.05)
            refresh = jobs.jobs[KAD_REFRESH].cpu_ns
            with jobs.running(AUTONAT_ROUND):
                await trio.sleep(0.05)  # the leftover task burns meanwhile
            nursery.cancel_scope.cancel()
        counts = jobs.snapshot()
        assert counts[KAD_REFRESH]["runs"] == counts[AUTONAT_ROUND]["runs"] == 1
        return refresh, jobs.jobs[KAD_REFRESH].cpu_ns, jobs.jobs[AUTONAT_ROUND].cpu_ns

    refresh, after, autonat = trio.run(main)
    assert refresh >= 20_000_000  # most of the 50 ms went to the leftover's steps
    assert after == refresh  # its steps after the refresh ended are nobody's
    assert autonat < 5_000_000  # the round's own few steps only
