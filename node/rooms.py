"""Rooms this node takes part in: who is in each, kept in step with the membership fold.

The fold itself is `protocol.membership`; this module holds each group's MEMBERSHIP events in
history order, re-folds when one arrives (possibly out of order), and writes the difference to
the store's member tables. Methods taking a `store` run on the store's thread.
"""

from __future__ import annotations

import bisect
from enum import Enum

from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Role, RoomState, direct_room_state, fold
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.storage.api import Direction, Store

__all__ = ["Admission", "RoomRegistry"]

_SCAN_PAGE = 512


class Admission(Enum):
    """Whether a received envelope may enter a room's history here."""

    ACCEPT = "accept"
    DEFER = "defer"
    """Not yet: the membership events that would allow it may still be on their way."""


class RoomRegistry:
    """Member sets of the rooms of this node's local users."""

    def __init__(self, local_users: set[UserId]) -> None:
        self._local = local_users
        self._states: dict[RoomId, RoomState] = {}
        self._events: dict[RoomId, list[Envelope]] = {}

    # --- reading ----------------------------------------------------------------------------

    def state(self, store: Store, room: RoomId) -> RoomState | None:
        """The room's folded state, loading it from the store on first use."""
        if room not in self._states:
            members = store.members(room)
            if not members:
                return None
            events = self._load_membership_events(store, room)
            state = fold(room, events) if events else RoomState(room=room, created=True)
            if not events:  # a direct room: members follow from the id
                state.members = {m.user: _role(m.role) for m in members}
            self._states[room] = state
            self._events[room] = events
        return self._states[room]

    def members(self, store: Store, room: RoomId) -> set[UserId]:
        state = self.state(store, room)
        return set() if state is None else set(state.members)

    def rooms(self, store: Store, user: UserId) -> list[RoomId]:
        return store.rooms_of(user)

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

    # --- admission --------------------------------------------------------------------------

    def admit(self, store: Store, envelope: Envelope) -> Admission:
        """May `envelope` be stored in its room's history on this node?"""
        if envelope.kind is Kind.MEMBERSHIP:
            return Admission.ACCEPT  # the fold decides what it does; storing it is harmless
        if envelope.sender_user in self._local:
            return Admission.ACCEPT  # our own user, from another certified device
        state = self.state(store, envelope.room)
        if state is None:
            if self.is_direct_with_local(envelope):
                return Admission.ACCEPT
            return Admission.DEFER
        if state.is_member(envelope.sender_user):
            return Admission.ACCEPT
        # Not a member as far as we know: the ADD that makes them one may still be on its way
        # (sync and the outbox bring events in any order), so wait rather than refuse for good.
        return Admission.DEFER

    def is_direct_with_local(self, envelope: Envelope) -> bool:
        """Is the envelope's room the direct room of its sender and one of our users?"""
        return any(
            user != envelope.sender_user
            and direct_room_id(envelope.sender_user, user) == envelope.room
            for user in self._local
        )

    # --- changes ----------------------------------------------------------------------------

    def open_direct(self, store: Store, a: UserId, b: UserId, *, now_ms: int) -> RoomId:
        """Create (or find) the direct room of two users and list it for the local one(s)."""
        state = direct_room_state(a, b)
        if state.room not in self._states:
            for user in (a, b):
                store.add_member(state.room, user, role=0, local=user in self._local, now_ms=now_ms)
            self._states[state.room] = state
            self._events[state.room] = []
        return state.room

    def note_stored(self, store: Store, envelope: Envelope, *, now_ms: int) -> bool:
        """Account for a newly stored envelope; True if the member set changed."""
        if envelope.kind is not Kind.MEMBERSHIP:
            if self.state(store, envelope.room) is None and self.is_direct_with_local(envelope):
                local = next(
                    u
                    for u in self._local
                    if direct_room_id(envelope.sender_user, u) == envelope.room
                )
                self.open_direct(store, envelope.sender_user, local, now_ms=now_ms)
                return True
            return False
        before = self.members(store, envelope.room)
        events = self._events.setdefault(envelope.room, [])
        keys = [e.order_key for e in events]
        events.insert(bisect.bisect(keys, envelope.order_key), envelope)
        state = fold(envelope.room, events)
        self._states[envelope.room] = state
        after = set(state.members)
        for user in after - before:
            store.add_member(
                envelope.room,
                user,
                role=int(state.members[user]),
                local=user in self._local,
                now_ms=now_ms,
            )
        for user in before - after:
            store.remove_member(envelope.room, user)
        return before != after

    def membership_events(self, room: RoomId) -> list[Envelope]:
        """The room's MEMBERSHIP events in history order (sent to a member who is added)."""
        return list(self._events.get(room, []))


def _role(value: int) -> Role:
    return Role(value) if value in Role._value2member_map_ else Role.MEMBER
