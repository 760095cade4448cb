"""Our rooms' session keys shared ahead of our next send (SPEC §27.10.3).

A send that shares its session's key carries it in ROOM_KEY envelopes on the direct path, one
delivery per member home, and a member reads the message only once that copy lands, while
later sends' gossip copies are read on arrival: at 50 nodes a sender's first message reached
its last member ~3x slower than its later ones (SPEC §20.6). So when a room's members change
(our join, a member added or gone) or a member's newer record is learnt (a device linked, a
home found), the key goes out in the background once those changes have settled, at this
home's own moment (`protocol.e2ee.AheadPlan` decides when, and how often at most), and the
next send carries none. `RoomSender.wants_ahead` bounds what one share costs.

State: the plan (rooms watched, changes not yet shared, each room's bucket), whether the worker
runs, and counts of what went ahead. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from hearthmesh.protocol.e2ee import AheadPlan
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError, store_failed
from hearthmesh.protocol.identity import UserId

__all__ = ["KeyAhead"]

log = logging.getLogger(__name__)


class KeyAhead:
    """Shares a room's key ahead when its members or their records change (module docs)."""

    def __init__(
        self,
        *,
        share: Callable[[RoomId], Awaitable[int]],
        is_member: Callable[[RoomId, UserId], bool],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        plan: AheadPlan,
        now_ms: Callable[[], int],
    ) -> None:
        """`share(room)`: `Outgoing.share_ahead`. `is_member(room, user)`: by the room's state
        in memory (a room not held there is not made due by a record). `spawn`: the
        supervisor's."""
        self._share = share
        self._is_member = is_member
        self._spawn = spawn
        self._plan = plan
        self._now_ms = now_ms
        self._changed = asyncio.Event()
        """Set by each change: the worker reads the plan's timer again."""
        self._running = False
        self.rounds = 0
        """Rooms shared ahead (each a look at which member devices lack the key)."""
        self.shares = 0
        """ROOM_KEY envelopes those rounds sent."""

    def due_ms(self, room: RoomId) -> int | None:
        """When `room`'s key goes ahead next; None if no change waits for it."""
        return self._plan.due_ms(room)

    @property
    def watched(self) -> int:
        """How many rooms a member's record makes due (bounded by the plan)."""
        return len(self._plan.watched)

    def room_changed(self, room: RoomId) -> None:
        """The members of `room` changed (we are one of them)."""
        self._plan.room_changed(room, self._now_ms())
        self._wake()

    def record_learnt(self, user: UserId) -> None:
        """A newer home record of `user` was kept: its devices may lack our keys."""
        rooms = [room for room in self._plan.watched if self._is_member(room, user)]
        if rooms:
            now_ms = self._now_ms()
            for room in rooms:
                self._plan.record_changed(room, now_ms)
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        if not self._running:
            self._running = True
            self._spawn(self._run(), "key-ahead")

    async def _run(self) -> None:
        try:
            while (timer_ms := self._plan.timer_ms()) is not None:
                self._changed.clear()
                wait_ms = timer_ms - self._now_ms()
                if wait_ms > 0:  # a change meanwhile may make a room due sooner: look again
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait_ms / 1000):
                            await self._changed.wait()
                    continue
                for room in self._plan.take_due(self._now_ms()):
                    await self._share_quietly(room)
        finally:
            self._running = False

    async def _share_quietly(self, room: RoomId) -> None:
        self.rounds += 1
        try:
            self.shares += await self._share(room)
        except HearthError as exc:  # our next send shares instead
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("room key of %s not shared ahead: %s", room.hex()[:12], exc)
