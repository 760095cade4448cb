"""A group's MEMBERSHIP events and their folded state, kept up to date per event (SPEC §12.3).

The state is the fold of the room's stored MEMBERSHIP events in history order (§4.5), as
`protocol.membership.fold` defines it, but never recomputed from the whole list: an event that
sorts after the last one applies to the current state in one step; an event that sorts earlier
(it arrived late) is folded from the nearest checkpoint before its place, and only the suffix
after that checkpoint is folded again. A checkpoint (a copy of the state) is kept every
`checkpoint_every` events, so the work for a late event is bounded by how late it is, and the
result is the same whatever order the events came in. Bounds per room and per sender cap both
the memory and the work (SPEC §12.4).

Threads: a reader on another thread (a gossip validator) may read `state.members` and
`state.direct` at any time. The current state is only ever changed one key at a time, or
replaced whole by a state folded aside, so such a reader sees a state before or after a step.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .envelope import Envelope, MessageId, RoomId
from .errors import LocalProtocolError, MembershipLimit, RemoteProtocolError
from .hlc import Timestamp
from .identity import UserId
from .membership import Action, MembershipChange, Role, RoomState, decode_membership

__all__ = [
    "DEFAULT_MEMBERSHIP_LIMITS",
    "MemberDiff",
    "MembershipLimits",
    "MembershipLog",
]

OrderKey = tuple[Timestamp, bytes, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipLimits:
    """Bounds of SPEC §12.4 (each a `NodeConfig` field)."""

    max_events_per_room: int = 4096
    """MEMBERSHIP events stored per room; more are refused with MEMBERSHIP_LIMIT (15)."""
    max_events_per_sender: int = 2048
    """MEMBERSHIP events stored per room and sender user; more are refused the same way. Twice
    a group's 1,024 members (SPEC §30.2): one admin may let every member in by invite."""
    checkpoint_every: int = 64
    """A copy of the state is kept every this many events: a late event re-folds at most the
    events after the checkpoint before its place."""
    max_rooms_held: int = 1024
    """Groups whose log a node keeps in memory; the least recently used one is dropped, and
    loaded from the store again (one fold) when it is next needed."""


DEFAULT_MEMBERSHIP_LIMITS: Final = MembershipLimits()


@dataclass(slots=True)
class MemberDiff:
    """How one event changed the member table: what to write to the store's member rows."""

    changed: dict[UserId, Role] = field(default_factory=dict)
    """Members added, or whose role changed."""
    removed: set[UserId] = field(default_factory=set)
    settings: bool = False
    """The group's name, topic, avatar or bans changed (no member row to write)."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.settings)


@dataclass(frozen=True, slots=True)
class _Entry:
    key: OrderKey
    message_id: MessageId
    sender: UserId
    change: MembershipChange


class MembershipLog:
    """One group's stored MEMBERSHIP events (in history order) and their fold."""

    def __init__(self, room: RoomId, *, limits: MembershipLimits = DEFAULT_MEMBERSHIP_LIMITS):
        if limits.checkpoint_every < 1:
            raise LocalProtocolError("checkpoint_every must be at least 1")
        self.room = room
        self.limits = limits
        self.state = RoomState(room=room)
        """The fold of every event held; read it, never change it."""
        self.steps = 0
        """Events applied (or tried) by the fold so far: the work done, for tests."""
        self._entries: list[_Entry] = []
        self._keys: list[OrderKey] = []
        self._ids: set[MessageId] = set()
        self._per_sender: dict[UserId, int] = {}
        self._checkpoints: list[RoomState] = [RoomState(room=room)]
        """`_checkpoints[j]` is the fold of the first `j * checkpoint_every` events."""
        self._joined: dict[UserId, OrderKey | None] = {}
        """`joined_at`'s answers per user, forgotten when an event is added."""

    @classmethod
    def load(
        cls,
        room: RoomId,
        events: list[Envelope],
        *,
        limits: MembershipLimits = DEFAULT_MEMBERSHIP_LIMITS,
    ) -> MembershipLog:
        """The log of events already stored (in history order), folded once.

        Bodies that do not decode are skipped (the fold would ignore them anyway); the bounds
        are not applied to what is already stored.
        """
        log = cls(room, limits=limits)
        for envelope in events:
            try:
                change = decode_membership(envelope.body)
            except RemoteProtocolError:  # stored before admission checked bodies: skip it
                continue
            log._insert(len(log._entries), _entry(envelope, change))
        log._refold_from(0)
        return log

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def message_ids(self) -> list[MessageId]:
        """The events held, in history order."""
        return [entry.message_id for entry in self._entries]

    def joined_at(self, users: Iterable[UserId]) -> OrderKey | None:
        """Where the earliest joined of `users` who are members now became one (SPEC §8.6): the
        place of the newest event held that made them one (their CREATE, ADD or JOIN); None
        if none of them is a member. Kept until the next event is added (the message path asks
        for every envelope it releases)."""
        found: OrderKey | None = None
        for user in users:
            if user not in self._joined:
                self._joined[user] = self._joining_of(user)
            key = self._joined[user]
            if key is not None and (found is None or key < found):
                found = key
        return found

    def _joining_of(self, user: UserId) -> OrderKey | None:
        if not self.state.is_member(user):
            return None
        for entry in reversed(self._entries):
            change = entry.change
            if change.action is Action.CREATE and entry.sender == user:
                return entry.key
            if change.action in (Action.ADD, Action.JOIN) and user in change.targets:
                return entry.key
        return None  # a member by no event held (cannot be: every member was made one)

    def state_before(self, envelope: Envelope) -> RoomState:
        """The fold of the events held that sort before `envelope`: where the rules are applied
        to it (SPEC §12.3). The current state itself if it sorts last (read it, never change it).

        Raises:
            MembershipLimit: the room, or the sender in this room, is at its bound (§12.4).
        """
        if len(self._entries) >= self.limits.max_events_per_room:
            raise MembershipLimit(
                f"room {self.room.hex()[:12]} holds {len(self._entries)} membership events"
            )
        sent = self._per_sender.get(envelope.sender_user, 0)
        if sent >= self.limits.max_events_per_sender:
            raise MembershipLimit(f"a sender's {sent} membership events in this room")
        return self._state_at(envelope.order_key)

    def add(self, envelope: Envelope, change: MembershipChange) -> MemberDiff:
        """Hold a newly stored event and fold it in; returns how the members changed.

        Call only after the rules allowed it at `state_before` and the store took it (an event
        held already changes nothing).
        """
        if envelope.message_id in self._ids:
            return MemberDiff()
        entry = _entry(envelope, change)
        self._joined.clear()
        place = bisect.bisect(self._keys, entry.key)
        if place == len(self._entries):  # in order: one step on the current state
            self._insert(place, entry)
            return self._apply_last(entry)
        before = self.state
        self._insert(place, entry)
        self._refold_from(place // self.limits.checkpoint_every)
        return _diff(before, self.state)

    # --- folding ----------------------------------------------------------------------------

    def _insert(self, place: int, entry: _Entry) -> None:
        self._entries.insert(place, entry)
        self._keys.insert(place, entry.key)
        self._ids.add(entry.message_id)
        self._per_sender[entry.sender] = self._per_sender.get(entry.sender, 0) + 1

    def _state_at(self, key: OrderKey) -> RoomState:
        """The fold of the events that sort before `key` (a copy unless it is the current)."""
        place = bisect.bisect(self._keys, key)
        if place == len(self._entries):
            return self.state
        every = self.limits.checkpoint_every
        start = place // every
        state = self._checkpoints[start].copy()
        for entry in self._entries[start * every : place]:
            self.steps += 1
            state.apply_change(entry.sender, entry.change, at_ms=entry.key[0].wall_ms)
        return state

    def _apply_last(self, entry: _Entry) -> MemberDiff:
        self.steps += 1
        effect = _effect(self.state, entry.sender, entry.change)
        # The live state changes one key at a time (see the module docstring).
        applied = self.state.apply_change(entry.sender, entry.change, at_ms=entry.key[0].wall_ms)
        if len(self._entries) % self.limits.checkpoint_every == 0:
            self._checkpoints.append(self.state.copy())
        return effect if applied else MemberDiff()

    def _refold_from(self, checkpoint: int) -> None:
        """Fold again from checkpoint `checkpoint` to the end; swap the result in whole."""
        every = self.limits.checkpoint_every
        del self._checkpoints[checkpoint + 1 :]
        state = self._checkpoints[checkpoint].copy()
        for index in range(checkpoint * every, len(self._entries)):
            if index and index % every == 0 and index // every == len(self._checkpoints):
                self._checkpoints.append(state.copy())
            entry = self._entries[index]
            self.steps += 1
            state.apply_change(entry.sender, entry.change, at_ms=entry.key[0].wall_ms)
        if self._entries and len(self._entries) % every == 0:
            self._checkpoints.append(state.copy())
        self.state = state


def _entry(envelope: Envelope, change: MembershipChange) -> _Entry:
    return _Entry(
        key=envelope.order_key,
        message_id=envelope.message_id,
        sender=envelope.sender_user,
        change=change,
    )


def _effect(state: RoomState, sender: UserId, change: MembershipChange) -> MemberDiff:
    """What `change` does to the member table of `state` if the rules allow it."""
    match change.action:
        case Action.CREATE:
            return MemberDiff(changed={sender: Role.OWNER})
        case Action.ADD | Action.JOIN:
            return MemberDiff(changed=dict.fromkeys(change.targets, Role.MEMBER))
        case Action.LEAVE | Action.KICK:
            return MemberDiff(removed={change.target})
        case Action.BAN:  # a ban of a non-member changes no member row
            return MemberDiff(removed={change.target} & set(state.members), settings=True)
        case Action.ROLE:
            return MemberDiff(changed={change.target: change.role})
        case _:  # UNBAN, RENAME, TOPIC, AVATAR, INVITE, REVOKE, HISTORY: not member rows
            return MemberDiff(settings=True)


def _settings(state: RoomState) -> tuple[object, ...]:
    return (state.name, state.topic, state.avatar, state.banned, state.invites, state.history)


def _diff(before: RoomState, after: RoomState) -> MemberDiff:
    settings = _settings(before) != _settings(after)
    diff = MemberDiff(removed=set(before.members) - set(after.members), settings=settings)
    for user, role in after.members.items():
        if before.members.get(user) is not role:
            diff.changed[user] = role
    return diff
