"""Whether the node's services run: the one flag that background reactions consult.

State: the flag, owned here; `Node.start` sets it once its services run and `Node.stop` clears it
first thing, so a reaction that comes in while the node stops does nothing.
"""

from __future__ import annotations

__all__ = ["RunState"]


class RunState:
    """Set while the node's services run; cleared when stopping begins."""

    def __init__(self) -> None:
        self._running = False

    def running(self) -> bool:
        return self._running

    def started(self) -> None:
        self._running = True

    def stopping(self) -> None:
        self._running = False
