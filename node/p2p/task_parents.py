"""py-libp2p's service manager finds a new task's parent by a lookup, not by a walk over every
task it runs (SPEC §20.6).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). py-libp2p
0.8.1's `TrioManager.run_task` files each task under the task that started it, found by
`_find_parent_task`: a walk over all the manager's running tasks for the one whose trio task is
the caller's. Pubsub starts a task for every gossip copy it reads (`push_msg`, duplicates
included) and runs a few tasks per peer besides, so each copy walked a list that grows with
the mesh: 2.8 % of a 25-node mesh node's busy samples in a scale run, a cost per message per
node that grows with the number of nodes.

`install()` wraps `TrioManager._run_and_manage_task` (each task's own trio task runs it) to note
which manager's `FunctionTask` that trio task runs while it does, and puts a lookup in that
table in place of the walk. Same answer: a task is found only by its own trio task, only in its
own manager, only once started (the walk's `has_trio_task`) and only while it runs (the walk
covers the tasks not yet finished: a task leaves its manager's tree as it ends, and its trio
task then runs no caller's code).

State: one table for the process, trio task → (manager, task), an entry per task running (the
hosts of one process, in tests, run on several trio threads; each entry is written and removed
by its own trio task, single dict operations).
"""

from __future__ import annotations

from typing import Any, Final

import trio
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask, TaskAPI, TaskWithChildrenAPI

__all__ = ["install"]

_running: Final[dict[trio.lowlevel.Task, tuple[TrioManager, FunctionTask]]] = {}
_libp2p_run_and_manage: Final = TrioManager._run_and_manage_task


async def _run_and_manage_task(self: TrioManager, task: TaskAPI) -> None:
    if not isinstance(task, FunctionTask):  # a child service: the walk never finds one
        await _libp2p_run_and_manage(self, task)
        return
    mine = trio.lowlevel.current_task()
    _running[mine] = (self, task)
    try:
        await _libp2p_run_and_manage(self, task)
    finally:
        del _running[mine]


def _find_parent_task(
    self: TrioManager, trio_task: trio.lowlevel.Task
) -> TaskWithChildrenAPI | None:
    found = _running.get(trio_task)
    if found is None or found[0] is not self or not found[1].has_trio_task:
        return None
    return found[1]


def install() -> None:
    """Use the lookup in every `TrioManager` of this process (idempotent)."""
    manager: Any = TrioManager
    manager._run_and_manage_task = _run_and_manage_task
    manager._find_parent_task = _find_parent_task
