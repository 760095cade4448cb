"""Room membership (SPEC §12): signed MEMBERSHIP events and their deterministic fold.

The member set of a room is a pure function of its MEMBERSHIP events taken in history order
(SPEC §4.5): every replica that holds the same events computes the same members. An event that
breaks a rule (a non-admin adding someone, a second CREATE) is ignored by the fold, never
half-applied. `ruling` is the one statement of those rules: the fold applies what it allows, and
admission (`protocol.authority`) refuses or defers the rest before anything is stored.
`refusal_of` says why, with the error a node answers its own client (SPEC §30.2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .envelope import Envelope, Kind, RoomId
from .errors import (
    Banned,
    MalformedMessage,
    MembershipConflict,
    MembershipLimit,
    NotAuthorized,
    QuotaExceeded,
    RemoteProtocolError,
    RoleRequired,
    TooLarge,
)
from .identity import KEY_BYTES, UserId
from .invite_record import (
    INVITE_ID_BYTES,
    MAX_INVITE_TTL_MS,
    MAX_INVITES_PER_GROUP,
    InviteRecord,
    decode_invite_nonce,
    usable,
)
from .rooms import direct_room_id, group_room_id

__all__ = [
    "AVATAR_DIGEST_BYTES",
    "HISTORY_JOINED",
    "HISTORY_SHARED",
    "MAX_ADD_TARGETS",
    "MAX_GROUP_NAME_BYTES",
    "MAX_GROUP_SIZE",
    "MAX_SHARED_HISTORY",
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
    "refusal_of",
    "ruling",
]

MEMBERSHIP_CONTENT_TYPE: Final = "application/x-hearthmesh-membership"
MAX_GROUP_NAME_BYTES: Final = 128
"""Also the bound of a TOPIC's text (SPEC §30.1)."""
MAX_GROUP_SIZE: Final = 1024
"""Members a group holds; an ADD or JOIN past it waits (SPEC §30.2)."""
AVATAR_DIGEST_BYTES: Final = 32
"""An AVATAR's media digest (SPEC §25); an empty one clears the avatar."""
MAX_ADD_TARGETS: Final = 64
"""Users one ADD may name (SPEC §12.1.1): a group of 1,024 is 16 events, not 1,024, so what
its formation queues grows with members²/64, not members²."""
_MAX_BODY_BYTES: Final = 512
_MAX_ADD_BODY_BYTES: Final = 2688
"""A body naming MAX_ADD_TARGETS users: 512 plus 63 more targets (34 bytes each) and their
array's head."""
_SEVEN_FIELDS: Final = b"\x87"
"""The head of a seven-field body (a CBOR array of 7): only it may pass 512 bytes."""
HISTORY_JOINED: Final = "joined"
"""A new member reads from their ADD on (SPEC §30.6): the default."""
HISTORY_SHARED: Final = "shared"
"""A new member is given the last N messages before their ADD (SPEC §30.6)."""
MAX_SHARED_HISTORY: Final = 256
"""The most messages a HISTORY setting may share with a new member."""


class Action(IntEnum):
    """What a MEMBERSHIP event does (SPEC §12.1). Values are never renumbered."""

    CREATE = 1
    ADD = 2
    JOIN = 3
    LEAVE = 4
    KICK = 5
    ROLE = 6
    # SPEC §30.1: running a group
    BAN = 7
    UNBAN = 8
    RENAME = 9
    TOPIC = 10
    AVATAR = 11
    # SPEC §30.3, §30.6: invites and history in the fold
    INVITE = 12
    REVOKE = 13
    HISTORY = 14


_SETTINGS: Final = (
    Action.RENAME,
    Action.TOPIC,
    Action.AVATAR,
    Action.INVITE,
    Action.REVOKE,
    Action.HISTORY,
)
"""Actions that change the group, not a member: self-targeted, like JOIN and LEAVE."""


class Role(IntEnum):
    """A member's role (SPEC §12.1, §30.2); a higher value outranks a lower one."""

    MEMBER = 0
    ADMIN = 1
    OWNER = 2
    """The group's creator: outranks admins, and only an owner makes owners."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChange:
    """The body of a MEMBERSHIP envelope."""

    action: Action
    target: UserId
    role: Role = Role.MEMBER
    nonce: bytes = b""
    """CREATE: the nonce of the group room id (SPEC §3.4.2); AVATAR: the media digest (empty
    clears it); INVITE: the invite's digest, expiry and uses (`invite_record`); ADD: empty, or
    the digest of the invite it was made by; REVOKE: the digest; HISTORY `shared`: the count
    (2 bytes, big-endian)."""
    open: bool = False
    """CREATE only: anyone who knows the room id may JOIN."""
    name: str = ""
    """CREATE and RENAME: the group's name; TOPIC: its topic; HISTORY: `joined` or `shared`."""
    more: tuple[UserId, ...] = ()
    """ADD only: the other users the same event adds, after `target` (SPEC §12.1.1); empty
    for an ADD of one, whose body is then the six fields alone."""

    @property
    def targets(self) -> tuple[UserId, ...]:
        """Every user the change names: `target`, then an ADD's `more`."""
        return (self.target, *self.more)

    @property
    def history_limit(self) -> int:
        """HISTORY `shared`: how many messages a new member is given."""
        return int.from_bytes(self.nonce, "big") if self.name == HISTORY_SHARED else 0


def encode_membership(change: MembershipChange) -> bytes:
    """CBOR [action, target, role, nonce, open (0/1), name], and [more...] after them for an
    ADD naming several users (SPEC §12.1.1)."""
    fields: list[CborValue] = [
        int(change.action),
        change.target,
        int(change.role),
        change.nonce,
        int(change.open),
        change.name,
    ]
    if change.more:
        fields.append(list(change.more))
    return encode_canonical(fields)


def decode_membership(body: bytes) -> MembershipChange:
    """Parse a MEMBERSHIP body.

    Raises:
        RemoteProtocolError: only this family (`TooLarge` past 512 bytes, or 2,688 for an ADD
            naming several users; `MalformedMessage` otherwise), so a caller that catches the
            family catches every bad body.
    """
    if len(body) > _MAX_BODY_BYTES and body[:1] != _SEVEN_FIELDS:
        raise TooLarge(f"membership body of {len(body)} bytes exceeds {_MAX_BODY_BYTES}")
    match decode_canonical(body, max_bytes=_MAX_ADD_BODY_BYTES):
        case [*fields, list() as more] if len(fields) == 6:
            change = _decode_fields(fields)
            targets = (change.target, *more)
            if (
                change.action is Action.ADD
                and change.nonce == b""  # an invite admits one joiner (SPEC §30.4)
                and 1 <= len(more) < MAX_ADD_TARGETS
                and all(isinstance(t, bytes) and len(t) == KEY_BYTES for t in more)
                and len(set(targets)) == len(targets)
            ):
                return dataclasses.replace(change, more=tuple(UserId(t) for t in more))
            raise MalformedMessage("only an ADD names more users, 2 to 64 distinct ones")
        case list() as fields if len(body) <= _MAX_BODY_BYTES:
            return _decode_fields(fields)
    raise MalformedMessage("not a membership body")


def _decode_fields(fields: list[CborValue]) -> MembershipChange:
    """The six fields every MEMBERSHIP body starts with."""
    match fields:
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
            and _nonce_fits(Action(action), nonce, name)
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


def _nonce_fits(action: Action, nonce: bytes, name: str) -> bool:
    """The per-action shape of `nonce` (and HISTORY's `name`), SPEC §30.1."""
    match action:
        case Action.AVATAR:
            return len(nonce) in (0, AVATAR_DIGEST_BYTES)
        case Action.ADD:
            return len(nonce) in (0, INVITE_ID_BYTES)
        case Action.REVOKE:
            return len(nonce) == INVITE_ID_BYTES
        case Action.INVITE:
            try:
                decode_invite_nonce(nonce)
            except MalformedMessage:
                return False
            return True
        case Action.HISTORY:
            if name == HISTORY_JOINED:
                return nonce == b""
            count = int.from_bytes(nonce, "big")
            return name == HISTORY_SHARED and len(nonce) == 2 and 1 <= count <= MAX_SHARED_HISTORY
    return True


@dataclass(slots=True, kw_only=True)
class RoomState:
    """The folded state of one room."""

    room: RoomId
    created: bool = False
    name: str = ""
    open: bool = False
    topic: str = ""
    avatar: bytes = b""
    """The media digest of the group's picture; empty for none."""
    members: dict[UserId, Role] = field(default_factory=dict)
    banned: set[UserId] = field(default_factory=set)
    """Users an admin banned: no ADD or JOIN of them is allowed until an UNBAN (SPEC §30.2)."""
    invites: dict[bytes, InviteRecord] = field(default_factory=dict)
    """Invites by digest, as their INVITE, REVOKE and ADD events fold (SPEC §30.3)."""
    history: str = HISTORY_JOINED
    history_limit: int = 0
    """`shared`: the last this many messages go to a new member (SPEC §30.6)."""
    direct: bool = False
    """A direct room (SPEC §3.4.1): its two members follow from its id and never change."""
    ignored: int = 0
    """Events the fold refused (rule broken or body malformed)."""

    def is_member(self, user: UserId) -> bool:
        return user in self.members

    def rank(self, user: UserId) -> int:
        """The user's role as a number, -1 for a non-member (roles outrank by value)."""
        role = self.members.get(user)
        return -1 if role is None else int(role)

    def copy(self) -> RoomState:
        """An independent copy (the member table is not shared)."""
        return RoomState(
            room=self.room,
            created=self.created,
            name=self.name,
            open=self.open,
            topic=self.topic,
            avatar=self.avatar,
            members=dict(self.members),
            banned=set(self.banned),
            invites=dict(self.invites),
            history=self.history,
            history_limit=self.history_limit,
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
        return self.apply_change(envelope.sender_user, change, at_ms=envelope.hlc.wall_ms)

    def apply_change(self, sender: UserId, change: MembershipChange, *, at_ms: int) -> bool:
        """`apply` for a body already decoded, of an event at wall time `at_ms`; False (and
        nothing changes) if not allowed."""
        if ruling(self, sender, change, at_ms=at_ms) is Ruling.ALLOWED:
            _apply(self, sender, change, at_ms)
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


def ruling(state: RoomState, sender: UserId, change: MembershipChange, *, at_ms: int) -> Ruling:
    """The one statement of the membership rules (SPEC §12.2, §30.2), for the fold and for
    admission; `at_ms` is the event's wall time (an invite's expiry is judged at it)."""
    return _judge(state, sender, change, at_ms)[0]


def refusal_of(
    state: RoomState, sender: UserId, change: MembershipChange, *, at_ms: int
) -> RemoteProtocolError | None:
    """Why `change` by `sender` is not allowed now (None if it is): the error a node answers
    its own client with (SPEC §30.2). Peers are answered by `ruling` alone (§12.2)."""
    return _judge(state, sender, change, at_ms)[1]


def _judge(
    state: RoomState, sender: UserId, change: MembershipChange, at_ms: int
) -> tuple[Ruling, RemoteProtocolError | None]:
    """The ruling, and the error that explains a refusal."""
    if state.direct:
        return Ruling.NEVER, NotAuthorized("a direct room's members follow from its id")
    action = change.action
    if action is Action.CREATE:
        valid = (
            change.target == sender
            and len(change.nonce) >= 16
            and group_room_id(sender, change.nonce) == state.room
        )
        if valid and not state.created:
            return Ruling.ALLOWED, None
        return Ruling.NEVER, MembershipConflict("the group exists, or the CREATE does not match it")
    if action in (Action.JOIN, Action.LEAVE, *_SETTINGS) and change.target != sender:
        return Ruling.NEVER, NotAuthorized(f"{action.name} names its sender only")
    if action is Action.INVITE and not _lasts(change, at_ms):
        return Ruling.NEVER, MalformedMessage("an invite lasts up to 30 days from its event")
    if not state.created:
        return Ruling.NOT_YET, NotAuthorized("the group's CREATE is not held")
    if action is Action.JOIN and not state.open:
        return Ruling.NEVER, NotAuthorized("a closed group takes members by invite only")
    error = _not_yet(state, sender, change, at_ms)
    return (Ruling.ALLOWED, error) if error is None else (Ruling.NOT_YET, error)


def _lasts(change: MembershipChange, at_ms: int) -> bool:
    """An INVITE expires after its event, and within MAX_INVITE_TTL_MS of it."""
    expires_ms = decode_invite_nonce(change.nonce)[1]
    return at_ms < expires_ms <= at_ms + MAX_INVITE_TTL_MS


def _not_yet(
    state: RoomState, sender: UserId, change: MembershipChange, at_ms: int
) -> RemoteProtocolError | None:
    """What keeps a change of a created group from applying at this point, if anything: an
    event that sorts earlier could still change it, so the answer is NOT_YET, never NEVER."""
    action, target = change.action, change.target
    rank, target_rank = state.rank(sender), state.rank(change.target)
    if action is Action.LEAVE:
        return None if rank >= 0 else MembershipConflict("not a member")
    if action is Action.JOIN:
        if target in state.banned:
            return Banned("banned from this group")
        if rank >= 0:
            return MembershipConflict("a member already")
        return _room_for(state, 1)
    if rank < Role.ADMIN:
        return RoleRequired(f"{action.name} needs an admin")
    match action:
        case Action.ADD:  # every user it names, or none (SPEC §12.1.1)
            if any(t in state.banned for t in change.targets):
                return Banned("banned from this group")
            if any(t in state.members for t in change.targets):
                return MembershipConflict("a member already")
            return _room_for(state, len(change.targets))
        case Action.KICK | Action.BAN:
            if action is Action.BAN and target in state.banned:
                return MembershipConflict("banned already")
            if action is Action.KICK and target_rank < 0:
                return MembershipConflict("not a member")
            if target_rank >= rank:
                return RoleRequired(f"{action.name} of an equal or higher role")
        case Action.UNBAN:
            if target not in state.banned:
                return MembershipConflict("not banned")
        case Action.ROLE:
            if target_rank < 0:
                return MembershipConflict("not a member")
            if target_rank >= rank or change.role > rank:
                return RoleRequired("a role change needs a higher role than both roles")
            if target_rank == change.role:
                return MembershipConflict(f"{change.role.name.lower()} already")
        case Action.INVITE:
            return _room_for_invite(state, change.nonce, at_ms)
        case Action.REVOKE:
            held = state.invites.get(change.nonce)
            if held is None or held.revoked:
                return MembershipConflict("no such invite, or revoked already")
    return None  # RENAME, TOPIC, AVATAR, HISTORY: any admin


def _room_for_invite(state: RoomState, nonce: bytes, at_ms: int) -> RemoteProtocolError | None:
    """A new invite's digest is new, and the group holds fewer than 32 usable ones."""
    if decode_invite_nonce(nonce)[0] in state.invites:
        return MembershipConflict("an invite of that digest exists")
    if sum(usable(r, now_ms=at_ms) for r in state.invites.values()) >= MAX_INVITES_PER_GROUP:
        return QuotaExceeded(f"a group holds at most {MAX_INVITES_PER_GROUP} open invites")
    return None


def _room_for(state: RoomState, count: int) -> RemoteProtocolError | None:
    if len(state.members) + count > MAX_GROUP_SIZE:
        return MembershipLimit(f"a group holds at most {MAX_GROUP_SIZE} members")
    return None


def _apply(state: RoomState, sender: UserId, change: MembershipChange, at_ms: int) -> None:
    match change.action:
        case Action.CREATE:
            state.created, state.name, state.open = True, change.name, change.open
            state.members[sender] = Role.OWNER
        case Action.ADD | Action.JOIN:
            for target in change.targets:  # one key at a time (membership_log, "Threads")
                state.members[target] = Role.MEMBER
            invite = state.invites.get(change.nonce) if change.action is Action.ADD else None
            if invite is not None:  # a use counted whatever the record: the ADD is an admin's
                state.invites[change.nonce] = invite.spent()
        case Action.LEAVE | Action.KICK:
            del state.members[change.target]
        case Action.BAN:
            state.banned.add(change.target)
            state.members.pop(change.target, None)
        case Action.UNBAN:
            state.banned.discard(change.target)
        case Action.ROLE:
            state.members[change.target] = change.role
        case Action.RENAME:
            state.name = change.name
        case Action.TOPIC:
            state.topic = change.name
        case Action.AVATAR:
            state.avatar = change.nonce
        case Action.INVITE:
            digest, expires_ms, max_uses = decode_invite_nonce(change.nonce)
            state.invites[digest] = InviteRecord(
                invite_id=digest,
                issuer=sender,
                created_ms=at_ms,
                expires_ms=expires_ms,
                max_uses=max_uses,
            )
        case Action.REVOKE:
            state.invites[change.nonce] = state.invites[change.nonce].revoke()
        case Action.HISTORY:
            state.history, state.history_limit = change.name, change.history_limit


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
