"""Interpreter settings for a process that runs one home node (`hearthmesh run`): the garbage
collector and the thread switch interval.

CPython's default thresholds (700, 10, 10) start a young-generation collection every 700 net
allocations. A busy node allocates a few hundred short-lived objects per message (frames,
envelopes, futures), so the collector ran every few messages and scanned a heap that is mostly
long-lived libp2p and node state. A higher young threshold lets that garbage die by reference
count first, and freezing what startup built keeps it out of every later scan.

Measured with `hearthmesh bench api` (its two `hearthmesh run` processes tuned, 3 interleaved
pairs on this 2-core machine): same-node msgs/s 5,649 to 6,306 against 5,293 to 5,465
untuned; cross-node msgs/s 2,635 to 2,705 against 2,192 to 2,426, and cross-node p50 lower in
every pair (3.51 / 4.32 / 4.55 ms against 3.79 / 5.13 / 4.83).

A node runs three threads that take turns on the GIL: the event loop, the trio thread and the
store's writer (ARCHITECTURE §5). A thread whose blocking call returns (the writer's fsync, the
trio thread's socket read) waits for the GIL until the holder blocks or the switch interval
ends, 5 ms by default: a message's durable commit was done on the disk but its result waited
for the loop to finish other work. `SWITCH_INTERVAL_S` bounds that wait.

Only processes we own are tuned: an app that embeds a `Node` keeps its own settings.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

__all__ = ["SWITCH_INTERVAL_S", "THRESHOLDS", "freeze_startup_objects", "tune_process"]

THRESHOLDS: Final = (50_000, 20, 10)
"""Young collection every 50,000 net allocations; older generations as often, relatively."""


SWITCH_INTERVAL_S: Final = 0.0005
"""Longest a thread that wants the GIL waits for a thread running Python (CPython: 5 ms)."""


def tune_process() -> None:
    """Set the node process's collector thresholds and switch interval; call before the node
    starts."""
    gc.set_threshold(*THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_objects() -> None:
    """Collect startup's garbage, then move every object that survived (modules, the libp2p
    host, the node's long-lived state) where the collector never scans it again."""
    gc.collect()
    gc.freeze()
