"""Our rooms' session keys shared ahead of our next send (SPEC §27.10.3).

A send that shares its session's key carries it in ROOM_KEY envelopes on the direct path, one
delivery per member home, and a member reads the message only once that copy lands, while
later sends' gossip copies are read on arrival: at 50 nodes a sender's first message reached
its last member ~3x slower than its later ones (SPEC §20.6). So when a room's members change
(our join, a member added or gone) or a member's newer record is learnt (a device linked, a
home found), the key goes out then, in the background, a moment later (`delay_s`: a group's
formation, a burst of adds or records, is shared once), and the next send carries none.
`RoomSender.wants_ahead` bounds what that costs.

State: the rooms due a look, the rooms watched (those whose members changed since start: a
record of one of their members makes them due), and whether the worker runs. Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

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
        delay_s: float,
    ) -> None:
        """`share(room)`: `Outgoing.share_ahead`. `is_member(room, user)`: by the room's state
        in memory (a room not held there is not made due by a record). `spawn`: the
        supervisor's."""
        self._share = share
        self._is_member = is_member
        self._spawn = spawn
        self._delay_s = delay_s
        self._due: set[RoomId] = set()
        self._watched: set[RoomId] = set()
        self._running = False

    def room_changed(self, room: RoomId) -> None:
        """The members of `room` changed (we are one of them)."""
        self._watched.add(room)
        self._make_due(room)

    def record_learnt(self, user: UserId) -> None:
        """A newer home record of `user` was kept: its devices may lack our keys."""
        for room in self._watched:
            if self._is_member(room, user):
                self._make_due(room)

    def _make_due(self, room: RoomId) -> None:
        self._due.add(room)
        if not self._running:
            self._running = True
            self._spawn(self._run(), "key-ahead")

    async def _run(self) -> None:
        try:
            while self._due:
                await asyncio.sleep(self._delay_s)
                rooms, self._due = self._due, set()
                for room in rooms:
                    await self._share_quietly(room)
        finally:
            self._running = False

    async def _share_quietly(self, room: RoomId) -> None:
        try:
            await self._share(room)
        except HearthError as exc:  # our next send shares instead
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("room key of %s not shared ahead: %s", room.hex()[:12], exc)
