"""Whether the room-key askers need to read what the store holds unopened (SPEC §27.12, §27.13).

`KeyForwarding` and `KeyRequests` ask every interval while envelopes wait for a room key. A home
that holds none read the store to find that out each time: at the tests' 250 ms, ~2.5-3 ms of
CPU a second per idle node. `Store.holds` counts the held notes written since the store opened
(`hold_encrypted` is their only writer); once a read found nothing held, the next one waits
until that count moves, and an idle home reads nothing.

A read runs in a committed snapshot, and a hold counted before it may sit in a batch that is
staged and not committed yet (the count moves when the hold's write returns, inside the
arrival's batch). So an empty read is confirmed through the write path (`AsyncStore.run`, which
sees every batch staged or run before it) before the watch goes quiet. A new watch is not
quiet: what was held before the node started is read at its first round.

State: the count at the last confirmed empty read (one watch per asker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["HeldWatch"]

T = TypeVar("T")


class HeldWatch:
    """Reads what is held only while something may be (see the module docstring)."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._quiet_at: int | None = None
        """`Store.holds` when a read last confirmed nothing held; None before any read."""

    @property
    def quiet(self) -> bool:
        """Nothing is held: no hold was written since a read found none."""
        return self._store.store.holds == self._quiet_at

    async def read(self, fn: Callable[[Store], list[T]]) -> list[T]:
        """`fn(store)`, a read of what is held; [] without touching the store while quiet."""
        holds = self._store.store.holds  # before the read: a hold after it moves the count
        if holds == self._quiet_at:
            return []
        found = await self._store.read(fn, self._store.store)
        if not found:
            found = await self._store.run(fn, self._store.store)
            if not found:
                self._quiet_at = holds
        return found
