"""Rooms this node takes part in: who is in each (SPEC §12).

Who may write into each is decided in `protocol.arrival` (over `protocol.authority` and
`protocol.membership`), reading the states held here through `states(store)`; the incremental
fold is `protocol.membership_log`. This module is the one owner of the rooms' states in memory:
a direct room's fixed state, or a group's log, loaded from the store on first use and then kept
up to date per event; it writes each change to the store's member rows. Methods taking a
`store` run on the store's thread (inside a store write batch); `view` may be called from any
thread.
"""

from __future__ import annotations

from collections import OrderedDict

from hearthmesh.protocol.arrival import RoomStates, direct_partner, room_ruling
from hearthmesh.protocol.authority import Ruling
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import NotAuthorized
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import (
    Role,
    RoomState,
    decode_membership,
    direct_room_state,
    refusal_of,
)
from hearthmesh.protocol.membership_log import (
    DEFAULT_MEMBERSHIP_LIMITS,
    MemberDiff,
    MembershipLimits,
    MembershipLog,
)
from hearthmesh.protocol.rooms import is_direct_room
from hearthmesh.storage.api import Direction, Member, Store

__all__ = ["RoomRegistry"]

_SCAN_PAGE = 512


class RoomRegistry:
    """Member sets of the rooms of this node's local users."""

    def __init__(
        self,
        local_users: set[UserId],
        *,
        limits: MembershipLimits = DEFAULT_MEMBERSHIP_LIMITS,
    ) -> None:
        self._local = local_users
        self._limits = limits
        self._fixed: dict[RoomId, RoomState] = {}
        """Rooms whose members follow from their id (direct rooms, our user's own room)."""
        self._logs: OrderedDict[RoomId, MembershipLog] = OrderedDict()
        """Groups: their MEMBERSHIP events and fold, least recently used first (bounded)."""

    # --- reading ----------------------------------------------------------------------------

    def state(self, store: Store, room: RoomId) -> RoomState | None:
        """The room's folded state, loading it from the store on first use."""
        log = self._log(store, room)
        return self._fixed.get(room) if log is None else log.state

    def view(self, room: RoomId) -> RoomState | None:
        """The state held in memory, if any, without loading (safe from any thread: see
        `protocol.membership_log` on readers)."""
        fixed = self._fixed.get(room)
        if fixed is not None:
            return fixed
        log = self._logs.get(room)
        return None if log is None else log.state

    def members(self, store: Store, room: RoomId) -> set[UserId]:
        state = self.state(store, room)
        return set() if state is None else set(state.members)

    def rooms(self, store: Store, user: UserId) -> list[RoomId]:
        return store.rooms_of(user)

    def membership_events(self, room: RoomId) -> list[MessageId]:
        """The room's MEMBERSHIP events held, in history order."""
        log = self._logs.get(room)
        return [] if log is None else log.message_ids()

    def fold_steps(self, room: RoomId) -> int:
        """Fold steps spent on `room` since it was loaded (the work, for tests)."""
        log = self._logs.get(room)
        return 0 if log is None else log.steps

    def _log(self, store: Store, room: RoomId) -> MembershipLog | None:
        """A group's log, loading the room from the store on first use (a room whose members
        follow from its id goes to `_fixed` instead, and None is returned)."""
        log = self._logs.get(room)
        if log is not None:
            self._logs.move_to_end(room)
            return log
        if room in self._fixed:
            return None
        rows = store.members(room)
        members = [m.user for m in rows]
        if is_direct_room(room, members):
            self._fixed[room] = direct_room_state(members[0], members[1])
            return None
        events = self._load_membership_events(store, room)
        if events:
            log = self._hold(MembershipLog.load(room, events, limits=self._limits))
        elif members:  # our own user's room: members from the rows, no events
            self._fixed[room] = RoomState(
                room=room,
                created=True,
                members={m.user: _role(m.role) for m in rows},
                direct=True,
            )
        return log

    def _load_membership_events(self, store: Store, room: RoomId) -> list[Envelope]:
        events: list[Envelope] = []
        cursor = None
        while True:
            page = store.page_history(
                room, cursor=cursor, direction=Direction.FORWARD, limit=_SCAN_PAGE
            )
            events += [e.envelope for e in page.events if e.envelope.kind is Kind.MEMBERSHIP]
            if page.next is None:
                return events
            cursor = page.next

    # --- the rule's view -------------------------------------------------------------------

    def states(self, store: Store) -> RoomStates:
        """The rooms as `protocol.arrival` reads them, loading from `store` on first use."""
        return _StoreRooms(self, store)

    def membership_log(self, room: RoomId) -> MembershipLog:
        """The group's log as held, or an empty one (a room not held, or not a group)."""
        return self._logs.get(room) or MembershipLog(room, limits=self._limits)

    def check_own(self, store: Store, envelope: Envelope) -> None:
        """Our own MEMBERSHIP change must be allowed now, against the folded state (§12.6).

        Raises:
            NotAuthorized: the rules do not allow it (nothing may be written); the SPEC §30.2
                reason where there is one (`RoleRequired`, `Banned`, `MembershipConflict`).
            MembershipLimit: the room or our user is at its bound.
        """
        ruling = room_ruling(envelope, self.states(store), self._local)
        if ruling is not Ruling.ALLOWED:
            state = self.state(store, envelope.room)
            # our own event sorts last: the current state is the one it is judged at
            reason = (
                None
                if state is None
                else refusal_of(
                    state,
                    envelope.sender_user,
                    decode_membership(envelope.body),
                    at_ms=envelope.hlc.wall_ms,
                )
            )
            raise reason or NotAuthorized(f"membership change refused: {ruling.name.lower()}")

    # --- changes ----------------------------------------------------------------------------

    def open_direct(self, store: Store, a: UserId, b: UserId, *, now_ms: int) -> RoomId:
        """Create (or find) the direct room of two users and list it for the local one(s)."""
        state = direct_room_state(a, b)
        if state.room not in self._fixed:
            for user in (a, b):
                store.add_member(state.room, user, role=0, local=user in self._local, now_ms=now_ms)
            self._fixed[state.room] = state
        return state.room

    def note_stored(self, store: Store, envelope: Envelope, *, now_ms: int) -> bool:
        """Account for a newly stored (admitted) envelope; True if the member set changed."""
        if envelope.kind is not Kind.MEMBERSHIP:
            if self.state(store, envelope.room) is None:
                local = direct_partner(envelope, self._local)
                if local is not None:  # a direct room opens with its first message
                    self.open_direct(store, envelope.sender_user, local, now_ms=now_ms)
                    return True
            return False
        if envelope.room in self._fixed:
            return False  # admission never lets one in; nothing to fold
        change = decode_membership(envelope.body)
        try:
            log = self._logs.get(envelope.room)
            if log is None and (log := self._log(store, envelope.room)) is not None:
                # loaded from the store, this event included: bring the rows in line with it
                diff = _rows_diff(store.members(envelope.room), log.state)
            else:
                if log is None:
                    log = self._hold(MembershipLog(envelope.room, limits=self._limits))
                diff = log.add(envelope, change)
            self._write_members(store, envelope.room, diff, now_ms)
        except BaseException:
            # The store undoes this batch's writes; memory must not keep what it lost:
            # the room is loaded again from the store on next use.
            self.forget(envelope.room)
            raise
        return bool(diff)

    def _hold(self, log: MembershipLog) -> MembershipLog:
        self._logs[log.room] = log
        while len(self._logs) > self._limits.max_rooms_held:
            self._logs.popitem(last=False)  # loaded again from the store when next needed
        return log

    def forget(self, room: RoomId) -> None:
        """Drop what memory holds of `room` (after a failed write): reload it on next use."""
        self._logs.pop(room, None)

    def _write_members(self, store: Store, room: RoomId, diff: MemberDiff, now_ms: int) -> None:
        for user, role in diff.changed.items():
            store.add_member(room, user, role=int(role), local=user in self._local, now_ms=now_ms)
        for user in diff.removed:
            store.remove_member(room, user)


def _rows_diff(rows: list[Member], state: RoomState) -> MemberDiff:
    stored = {row.user: _role(row.role) for row in rows}
    diff = MemberDiff(removed=set(stored) - set(state.members))
    for user, role in state.members.items():
        if stored.get(user) is not role:
            diff.changed[user] = role
    return diff


def _role(value: int) -> Role:
    return Role(value) if value in Role._value2member_map_ else Role.MEMBER


class _StoreRooms:
    """`RoomRegistry` bound to one store transaction, as the arrival rules read rooms."""

    __slots__ = ("_registry", "_store")

    def __init__(self, registry: RoomRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store

    def state(self, room: RoomId) -> RoomState | None:
        return self._registry.state(self._store, room)

    def membership_log(self, room: RoomId) -> MembershipLog:
        return self._registry.membership_log(room)
