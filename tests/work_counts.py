"""What each test makes the code do, counted for the CPU log (tests/conftest.py): node and host
starts, dials, meetings, syncs, forked and exec'd processes. CPU and wall move with the
machine's load by up to 40 %; these counts do not, so they rank the tests by what they cost
(tests/cpu_report.py) and show whether a change to a test cut its work.

Installed only when the CPU log is on: each counted callable is wrapped to add one to its
counter and then call the original, so nothing a test checks changes.
"""

from __future__ import annotations

import functools
import importlib
import subprocess
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

COUNTED: Final = {
    "node_starts": ("hearthmesh.node.node", "Node", "start"),
    "host_starts": ("hearthmesh.node.p2p.host", "P2PHost", "__aenter__"),
    "dials": ("hearthmesh.node.p2p.host", "P2PHost", "connect"),
    "meetings": ("hearthmesh.node.mesh.meeting", "Meeting", "meet"),
    "syncs": ("hearthmesh.node.delivery.sync", "SyncService", "sync_with"),
    "forks": ("hearthmesh.tools.zygote", "Zygote", "start"),
}
"""Counter name: (module, class, method). A meeting is one side's hello with a newly
connected peer, so a pair that meets counts two; `forks` are node processes from the zygote."""
NAMES: Final = (*COUNTED, "execs")
"""Every counter, `execs` (each `subprocess.Popen`) last."""

counts: Counter[str] = Counter()
"""This process's totals so far; the CPU log's hook takes the difference around each test.
Incremented from the asyncio and trio threads alike: a lost increment under a thread switch
would cost a count, never a test."""


def _counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return original(*args, **kwargs)  # a coroutine method returns its coroutine unchanged

    return counted


def install() -> None:
    """Wrap each counted callable once (a second call is a no-op)."""
    if counts:
        return
    for name, (module, cls, method) in COUNTED.items():
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, method, _counting(name, getattr(owner, method)))
        counts[name] = 0
    # exec'd processes: `hearthmesh run` as users start it, the netlab's tools, Playwright's
    # driver (Chromium is the driver's child: not counted)
    popen_init = subprocess.Popen.__init__
    subprocess.Popen.__init__ = _counting("execs", popen_init)  # type: ignore[method-assign]
    counts["execs"] = 0


def since(before: Counter[str]) -> dict[str, int]:
    """The counts added since `before` (a copy of `counts`), zeros left out."""
    return {name: n - before[name] for name, n in counts.items() if n > before[name]}
