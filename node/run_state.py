"""Whether the node's services run, and whether it failed: the state background reactions and
the client API consult.

State: the flag and the failure, owned here; `Node.start` sets the flag once its services run
and `Node.stop` clears it first thing, so a reaction that comes in while the node stops does
nothing. `failed` records the fault that made the node stop itself (SPEC §11.8.5): it stays
until the node object is dropped, so the API and the embedding app can say why.
"""

from __future__ import annotations

import asyncio

from hearthmesh.protocol.errors import NodeFailed

__all__ = ["RunState"]


class RunState:
    """Set while the node's services run; cleared when stopping begins or the node fails."""

    def __init__(self) -> None:
        self._running = False
        self._failure: NodeFailed | None = None
        self._failed = asyncio.Event()

    def running(self) -> bool:
        return self._running

    def started(self) -> None:
        self._running = True

    def stopping(self) -> None:
        self._running = False

    def failed(self, failure: NodeFailed) -> None:
        """The node failed (the first fault counts): it runs no more."""
        self._running = False
        if self._failure is None:
            self._failure = failure
            self._failed.set()

    @property
    def failure(self) -> NodeFailed | None:
        """What made the node fail; None while it has not."""
        return self._failure

    async def wait_failed(self) -> NodeFailed:
        """Wait until the node fails; its failure."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure
