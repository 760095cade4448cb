"""Room membership (SPEC §12): signed MEMBERSHIP events and their deterministic fold.

The member set of a room is a pure function of its MEMBERSHIP events taken in history order
(SPEC §4.5): every replica that holds the same events computes the same members. An event that
breaks a rule (a non-admin adding someone, a second CREATE) is ignored by the fold, never
half-applied. `ruling` is the one statement of those rules: the fold applies what it allows, and
admission (`protocol.authority`) refuses or defers the rest before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .envelope import Envelope, Kind, RoomId
from .errors import MalformedMessage, RemoteProtocolError
from .identity import KEY_BYTES, UserId
from .rooms import direct_room_id, group_room_id

__all__ = [
    "MAX_GROUP_NAME_BYTES",
    "MEMBERSHIP_CONTENT_TYPE",
    "Action",
    "MembershipChange",
    "Role",
    "RoomState",
    "Ruling",
    "decode_membership",
    "direct_room_state",
    "encode_membership",
    "fold",
    "ruling",
]

MEMBERSHIP_CONTENT_TYPE: Final = "application/x-hearthmesh-membership"
MAX_GROUP_NAME_BYTES: Final = 128
_MAX_BODY_BYTES: Final = 512


class Action(IntEnum):
    """What a MEMBERSHIP event does (SPEC §12.1). Values are never renumbered."""

    CREATE = 1
    ADD = 2
    JOIN = 3
    LEAVE = 4
    KICK = 5
    ROLE = 6


class Role(IntEnum):
    """A member's role (SPEC §12.1)."""

    MEMBER = 0
    ADMIN = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChange:
    """The body of a MEMBERSHIP envelope."""

    action: Action
    target: UserId
    role: Role = Role.MEMBER
    nonce: bytes = b""
    """CREATE only: the nonce of the group room id (SPEC §3.4.2)."""
    open: bool = False
    """CREATE only: anyone who knows the room id may JOIN."""
    name: str = ""
    """CREATE only: the group's name."""


def encode_membership(change: MembershipChange) -> bytes:
    """CBOR [action, target, role, nonce, open (0/1), name]."""
    return encode_canonical(
        [
            int(change.action),
            change.target,
            int(change.role),
            change.nonce,
            int(change.open),
            change.name,
        ]
    )


def decode_membership(body: bytes) -> MembershipChange:
    """Parse a MEMBERSHIP body.

    Raises:
        RemoteProtocolError: only this family (`TooLarge` past 512 bytes, `MalformedMessage`
            otherwise), so a caller that catches the family catches every bad body.
    """
    value = decode_canonical(body, max_bytes=_MAX_BODY_BYTES)
    match value:
        case [
            int() as action,
            bytes() as target,
            int() as role,
            bytes() as nonce,
            int() as open_,
            str() as name,
        ] if (
            action in Action._value2member_map_
            and role in Role._value2member_map_
            and len(target) == KEY_BYTES
            and open_ in (0, 1)
            and len(nonce) <= 64
            and len(name.encode()) <= MAX_GROUP_NAME_BYTES
        ):
            return MembershipChange(
                action=Action(action),
                target=UserId(target),
                role=Role(role),
                nonce=nonce,
                open=bool(open_),
                name=name,
            )
    raise MalformedMessage("not a membership body")


@dataclass(slots=True, kw_only=True)
class RoomState:
    """The folded state of one room."""

    room: RoomId
    created: bool = False
    name: str = ""
    open: bool = False
    members: dict[UserId, Role] = field(default_factory=dict)
    direct: bool = False
    """A direct room (SPEC §3.4.1): its two members follow from its id and never change."""
    ignored: int = 0
    """Events the fold refused (rule broken or body malformed)."""

    def is_member(self, user: UserId) -> bool:
        return user in self.members

    def copy(self) -> RoomState:
        """An independent copy (the member table is not shared)."""
        return RoomState(
            room=self.room,
            created=self.created,
            name=self.name,
            open=self.open,
            members=dict(self.members),
            direct=self.direct,
            ignored=self.ignored,
        )

    def apply(self, envelope: Envelope) -> bool:
        """Apply one MEMBERSHIP event in history order; False (and nothing changes) if refused."""
        if envelope.kind is not Kind.MEMBERSHIP or envelope.room != self.room:
            return False
        try:
            change = decode_membership(envelope.body)
        except RemoteProtocolError:  # the whole family: TooLarge as much as MalformedMessage
            self.ignored += 1
            return False
        return self.apply_change(envelope.sender_user, change)

    def apply_change(self, sender: UserId, change: MembershipChange) -> bool:
        """`apply` for a body already decoded; False (and nothing changes) if not allowed."""
        if ruling(self, sender, change) is Ruling.ALLOWED:
            _apply(self, sender, change)
            return True
        self.ignored += 1
        return False


class Ruling(Enum):
    """What the rules of SPEC §12.2 say of one change at one point of a room's history."""

    ALLOWED = 0
    NOT_YET = 1
    """Not at this point, but an event that sorts earlier and has not arrived yet (the CREATE,
    the ADD or ROLE that empowers the sender) could allow it: defer, never refuse for good."""
    NEVER = 2
    """No history can allow it (a direct room, a LEAVE for someone else, a forged CREATE)."""


def ruling(state: RoomState, sender: UserId, change: MembershipChange) -> Ruling:
    """The one statement of the membership rules (SPEC §12.2), for the fold and for admission."""
    if state.direct:
        return Ruling.NEVER  # a direct room's members follow from its id
    action = change.action
    if action is Action.CREATE:
        valid = (
            change.target == sender
            and len(change.nonce) >= 16
            and group_room_id(sender, change.nonce) == state.room
        )
        return Ruling.ALLOWED if valid and not state.created else Ruling.NEVER
    if action in (Action.JOIN, Action.LEAVE) and change.target != sender:
        return Ruling.NEVER  # self-only
    if not state.created:
        return Ruling.NOT_YET  # the CREATE may still be on its way
    sender_role = state.members.get(sender)
    match action:
        case Action.ADD:
            allowed = sender_role is Role.ADMIN and change.target not in state.members
        case Action.JOIN:
            if not state.open:
                return Ruling.NEVER  # openness is fixed by the CREATE
            allowed = sender not in state.members
        case Action.LEAVE:
            allowed = sender_role is not None
        case _:  # KICK, ROLE
            allowed = sender_role is Role.ADMIN and change.target in state.members
    return Ruling.ALLOWED if allowed else Ruling.NOT_YET


def _apply(state: RoomState, sender: UserId, change: MembershipChange) -> None:
    match change.action:
        case Action.CREATE:
            state.created, state.name, state.open = True, change.name, change.open
            state.members[sender] = Role.ADMIN
        case Action.ADD | Action.JOIN:
            state.members[change.target] = Role.MEMBER
        case Action.LEAVE | Action.KICK:
            del state.members[change.target]
        case Action.ROLE:
            state.members[change.target] = change.role


def fold(room: RoomId, events: Iterable[Envelope]) -> RoomState:
    """The state after `events` (in history order); non-membership events are skipped."""
    state = RoomState(room=room)
    for envelope in events:
        if envelope.kind is Kind.MEMBERSHIP:
            state.apply(envelope)
    return state


def direct_room_state(a: UserId, b: UserId) -> RoomState:
    """A direct room needs no events: its two members follow from its id (SPEC §3.4.1)."""
    return RoomState(
        room=direct_room_id(a, b),
        created=True,
        members={a: Role.MEMBER, b: Role.MEMBER},
        direct=True,
    )
