"""Whether the room-key askers need to read what the store holds unopened (SPEC §27.12, §27.13),
and when they may sleep.

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

A quiet watch also lets its asker sleep (`wait_due` with no due time) instead of waking each
interval to find the count unmoved. The wake source is the `StoreOutcomes` flow (`after_batch`,
subscribed by the wiring): every batch that writes a held note publishes its outcome there once
it committed (`Receiver` for arrivals, `LateNews` for what a key answer opened), so the read
the asker then makes sees the hold. While something is held, an asker keeping a schedule
(`KeyRequests`, `KeyForwarding`) sleeps to its next due time (`next_round`), woken as well by a
hold written since its last read and by its own `wake` (a request ended), and at least an
interval from its last read: what it read is what is held until then.

State: the count at the last read, at the last confirmed empty one and at the last
`new_holds`, the last read's start, and the wake-up event (one watch per asker, event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final, TypeVar

from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["QUIET_BACKSTOP_S", "HeldWatch"]

T = TypeVar("T")

QUIET_BACKSTOP_S: Final = 30.0
"""How long a quiet watch sleeps at most before it looks at the count again without a wake-up.
A hold whose batch published no outcome (a writer of held notes added later that forgets to)
would otherwise leave its envelopes unread for good; the look is a comparison of two integers."""


class HeldWatch:
    """Reads what is held only while something may be (see the module docstring)."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._quiet_at: int | None = None
        """`Store.holds` when a read last confirmed nothing held; None before any read."""
        self._read_at: int | None = None
        """`Store.holds` before the last read (or look that found the watch quiet)."""
        self._holds_told = 0
        """`Store.holds` at the last `new_holds`."""
        self._read_s = 0.0
        """The loop's time at the last read's start."""
        self._moved = asyncio.Event()
        """Set by `after_batch` when a committed batch moved the count past `_read_at`, or by
        `wake`."""

    @property
    def quiet(self) -> bool:
        """Nothing is held: no hold was written since a read found none."""
        return self._store.store.holds == self._quiet_at

    @property
    def _held_since_read(self) -> bool:
        return self._store.store.holds != self._read_at

    def after_batch(self, _outcome: StoreOutcome) -> None:
        """A store batch committed (a `StoreOutcomes` reaction): wake the asker if a held note
        was written since its last read (since the watch went quiet, when it is)."""
        if self._held_since_read:
            self._moved.set()

    def new_holds(self) -> bool:
        """A hold was written since the last call (the first call: whether any was)."""
        holds = self._store.store.holds
        moved = holds != self._holds_told
        self._holds_told = holds
        return moved

    def wake(self) -> None:
        """Wake a `wait_due` now: its asker has something to do that no hold brought."""
        self._moved.set()

    async def wait_due(self, delay_s: float | None) -> None:
        """Sleep `delay_s` (None: no time is due; at most `QUIET_BACKSTOP_S`), or until a
        committed batch wrote a hold since the last read, or `wake`."""
        if self._held_since_read:
            return  # a hold committed after the read began (or none read yet): read now
        self._moved.clear()
        timeout = QUIET_BACKSTOP_S if delay_s is None else min(delay_s, QUIET_BACKSTOP_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._moved.wait()

    async def next_round(self, delay_s: float | None, interval_s: float) -> None:
        """`wait_due`, then the rest of `interval_s` from the last read's start: rounds come at
        most one an interval apart, since a sibling's sync of held history commits hold after
        hold, and each would otherwise wake a read of every held session."""
        await self.wait_due(delay_s)
        rest_s = self._read_s + interval_s - asyncio.get_running_loop().time()
        if rest_s > 0:
            await asyncio.sleep(rest_s)

    async def read(self, fn: Callable[[Store], list[T]]) -> list[T]:
        """`fn(store)`, a read of what is held (a round's start); [] without touching the store
        while quiet."""
        self._read_s = asyncio.get_running_loop().time()
        holds = self._store.store.holds  # before the read: a hold after it moves the count
        self._read_at = holds
        if holds == self._quiet_at:
            return []
        found = await self._store.read(fn, self._store.store)
        if not found:
            found = await self._store.run(fn, self._store.store)
            if not found:
                self._quiet_at = holds
        return found
