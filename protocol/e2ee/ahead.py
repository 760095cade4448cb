"""When a room's session key is shared ahead of our next send (SPEC §27.10.3), sans-I/O.

A room is due once its changes (its members, a member's newer record) have been quiet for
`quiet_ms`, or `max_wait_ms` after the first change not yet shared, whichever is sooner; then
after this home's own offset in `spread_ms`, drawn from the room and our device; and no more
often than `burst` times at once and then one per `refill_ms`. Why each (SPEC §20.6, run E2):
with a fixed 1 s after the first change, every home of a 50-home group shared at once in the
middle of the group's formation, ~50 x 49 Olm pre-key shares (and as many first connections)
on top of the membership events' delivery, and the last home formed 38-56 s after the last add
where it had taken 2 s. The bucket bounds what a member that churns its records or a room's
membership can make us share.

State: the rooms watched (oldest dropped past `max_rooms`), the changes not yet shared and
each room's bucket, all of watched rooms only. Owned by `node.e2ee.key_ahead.KeyAhead`.
"""

from __future__ import annotations

import hashlib
from collections.abc import KeysView
from dataclasses import dataclass
from typing import Final

from ..envelope import RoomId

__all__ = ["DEFAULT_AHEAD", "AheadPlan", "AheadPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AheadPolicy:
    """When and how often a room's key goes ahead (the module docstring says why)."""

    quiet_ms: int = 3_000
    """The room's changes quiet this long: a group's adds come one by one, each a commit and a
    delivery to every member home (0.25-2.3 s apart at 50 nodes on 2 cores, SPEC §20.6; an
    add whose capability asks take longer, 9-13 s for the first ones in run F1, lets the homes
    share in between, as they did there)."""
    max_wait_ms: int = 60_000
    """Since the room's first change not yet shared: changes that never stop (a member's
    records churned) postpone it no longer. Longer than a formation of 1,024 members in 16
    events, 35-50 s at 50 nodes on 2 cores."""
    spread_ms: int = 5_000
    """Each home's offset from then, in [0, spread_ms): the homes of a group that formed
    together share apart."""
    burst: int = 4
    """Shares ahead of one room with no wait between them ..."""
    refill_ms: int = 30_000
    """... then one per this long."""
    max_rooms: int = 1_024
    """Rooms watched: past it the one changed longest ago is forgotten (a record learnt no
    longer makes it due; its next send shares as before)."""
    asks_at_once: int = 4
    """A round's capability asks of the member homes not heard from (SPEC §20.7) under way at
    once; a user's send asks at once, never behind them. Asked all at once, at a 50-home
    group's formation, every home's round dialled the others: ~2,400 asks on 2 cores, 566 of
    700 timed out after 10 s (SPEC §20.6, run D0)."""


DEFAULT_AHEAD: Final = AheadPolicy()


@dataclass(slots=True)
class _Pending:
    first_ms: int
    last_ms: int


class AheadPlan:
    """The rooms whose key is due to go ahead, and when (the module docstring)."""

    def __init__(self, policy: AheadPolicy, seed: bytes) -> None:
        """`seed`: our device's id, so that homes offset apart and each the same each time."""
        self._policy = policy
        self._seed = seed
        self._watched: dict[RoomId, None] = {}
        """Insertion-ordered: the room changed longest ago first."""
        self._pending: dict[RoomId, _Pending] = {}
        self._next_full_ms: dict[RoomId, int] = {}
        """Each room's bucket as the time its tokens would all be back (a GCRA)."""

    @property
    def watched(self) -> KeysView[RoomId]:
        """The rooms whose members changed since we started (a record may make them due)."""
        return self._watched.keys()

    def room_changed(self, room: RoomId, now_ms: int) -> None:
        """The members of `room` changed (we are one of them): watch it and note the change."""
        self._watched.pop(room, None)
        self._watched[room] = None
        if len(self._watched) > self._policy.max_rooms:
            oldest = next(iter(self._watched))
            del self._watched[oldest]
            self._pending.pop(oldest, None)
            self._next_full_ms.pop(oldest, None)
        self.record_changed(room, now_ms)

    def record_changed(self, room: RoomId, now_ms: int) -> None:
        """A newer record of a member of watched `room` was kept (others are ignored)."""
        if room not in self._watched:
            return
        pending = self._pending.get(room)
        if pending is None:
            self._pending[room] = _Pending(now_ms, now_ms)
        else:
            pending.last_ms = now_ms

    def due_ms(self, room: RoomId) -> int | None:
        """When the room's key goes ahead; None if no change waits for it."""
        pending = self._pending.get(room)
        return None if pending is None else self._due_ms(room, pending)

    def timer_ms(self) -> int | None:
        """The earliest `due_ms` of any room; None when none waits."""
        return min((self._due_ms(*each) for each in self._pending.items()), default=None)

    def take_due(self, now_ms: int) -> list[RoomId]:
        """The rooms due by `now_ms`, each taking a token of its bucket: share them now."""
        due = [room for room, each in self._pending.items() if self._due_ms(room, each) <= now_ms]
        refill_ms = self._policy.refill_ms
        for room in due:
            del self._pending[room]
            self._next_full_ms[room] = max(self._next_full_ms.get(room, 0), now_ms) + refill_ms
        return due

    def _due_ms(self, room: RoomId, pending: _Pending) -> int:
        policy = self._policy
        settled = min(pending.last_ms + policy.quiet_ms, pending.first_ms + policy.max_wait_ms)
        # a token is back once the bucket is at most `burst - 1` refills from full
        token_ms = self._next_full_ms.get(room, 0) - (policy.burst - 1) * policy.refill_ms
        return max(settled + self._offset_ms(room), token_ms)

    def _offset_ms(self, room: RoomId) -> int:
        spread_ms = self._policy.spread_ms
        if spread_ms <= 0:
            return 0
        digest = hashlib.blake2b(self._seed + room, digest_size=8).digest()
        return int.from_bytes(digest) % spread_ms
