"""A task filed under the task that started it by a lookup, not a walk over every task
(node/p2p/task_parents.py), in py-libp2p's real service manager on a real trio run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
import trio
from libp2p.tools.anyio_service import Service, background_trio_service
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask, TaskAPI

from hearthmesh.node.p2p import task_parents


class _Idle(Service):
    async def run(self) -> None:
        await trio.sleep_forever()


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many tasks the managers' walks visited (py-libp2p's `iterate_tasks`)."""
    visited: list[int] = []
    real = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionTask], *tasks: TaskAPI) -> Iterable[FunctionTask]:
        for task in real(cls, *tasks):
            visited.append(1)
            yield task

    monkeypatch.setattr(FunctionTask, "iterate_tasks", classmethod(counting))
    task_parents.install()
    yield visited


def _names(tasks: Iterable[TaskAPI]) -> set[str]:
    return {task.name.rsplit(".", 1)[-1] for task in tasks}


def test_a_task_is_filed_under_its_starter_in_its_own_manager_without_a_walk(
    walks: list[int],
) -> None:
    async def main() -> None:
        async with (
            background_trio_service(_Idle()) as ours,
            background_trio_service(_Idle()) as theirs,
        ):
            assert isinstance(ours, TrioManager) and isinstance(theirs, TrioManager)
            release, started = trio.Event(), trio.Event()

            async def waiting() -> None:  # a peer's reader, sender, ...: what the walk visited
                await release.wait()

            async def nested() -> None:  # a trio task of its own inside a task: not a task
                ours.run_task(waiting, name="from_nested")

            async def starter() -> None:
                ours.run_task(waiting, name="child")
                theirs.run_task(waiting, name="foreign")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(nested)
                started.set()
                await release.wait()

            for _ in range(300):
                ours.run_task(waiting, name="peer_task")
            ours.run_task(starter, name="starter")
            await started.wait()
            roots = {task.name: task for task in ours._root_tasks}
            # the service's own run, the peers' tasks, the starter and what a nursery of it started
            assert _names(roots.values()) == {"run", "peer_task", "starter", "from_nested"}
            assert _names(roots["starter"].children) == {"child"}  # type: ignore[attr-defined]
            assert _names(theirs._root_tasks) == {"run", "foreign"}
            release.set()
            ours.cancel()
            theirs.cancel()

    trio.run(main)
    assert sum(walks) == 0  # 300-odd tasks running, each start visited none of them
