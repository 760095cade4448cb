"""What happens to an arriving envelope: the one decision (SPEC §11.2.3, §12.2, §12.5).

Every way an envelope reaches one of our homes (a DELIVER batch, gossip, sync between our
homes, a gap fetch) asks `ArrivalRules.decide`, after verification (SPEC §11.2.2) and the HLC
merge (SPEC §4.3), and before anything is stored. What fails before that is answered by
`error_result`, and a copy the store answered lately by `RecentlyStored`:

| what arrives                                   | verdict | ack                          |
|------------------------------------------------|---------|------------------------------|
| an id `RecentlyStored` holds (for our user)    | -       | DUPLICATE, left unverified   |
| a bad signature, certificate or envelope       | -       | REJECTED (its code)          |
| a stamp past the drift bound (SPEC §4.3)       | -       | DEFERRED (3)                 |
| an ephemeral kind (typing, presence)           | REJECT  | REJECTED (1)                 |
| unsequenced, not a RECEIPT (SPEC §8.5)         | REJECT  | REJECTED (2)                 |
| for a user who does not live here              | RELAY   | RELAYED; DEFERRED (quota)    |
| from a user our user blocked (SPEC §32.3)      | DISCARD | STORED, and nothing stored   |
| from a device our newest record does not list  | DEFER   | DEFERRED (10); look it up    |
| ours, not MEMBERSHIP, in a room unknown here   | DEFER   | DEFERRED (10); learn rooms   |
| the sender may write it (`Ruling.ALLOWED`)     | STORE   | STORED, DUPLICATE; REJECTED  |
|                                                |         | (1) if another holds its slot |
| `Ruling.NEVER`, a bad body, a bound reached    | REJECT  | REJECTED (its code)          |
| `Ruling.NOT_YET`, ours or within the budget    | DEFER   | DEFERRED (10)                |
| `Ruling.NOT_YET`, the budget spent             | REJECT  | REJECTED (10)                |

What a newly stored envelope sets off is `reactions` (PRIVATE, RECEIPT, contact events,
profiles, RECALL).
The node performs all of it: the store, the relay inbox, the release order, the ack.

State owned here: the deferral budget per sender user (SPEC §12.5), and `RecentlyStored`, a
bounded memo of the store's own answers. Dedupe has one owner, the store: an append of a stored
message id is a no-op answered DUPLICATE, durable and exact. The memo only lets a second copy
(the other path brought it first) skip signature checks and a store hop; it is filled solely
from results the store gave, so it never answers anything the store would not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final, Protocol

from .addressing import check_sequencing
from .authority import (
    DEFAULT_DEFERRAL_POLICY,
    DeferralBudget,
    DeferralPolicy,
    Ruling,
    membership_ruling,
    writer_ruling,
)
from .content import is_contact_event
from .delivery import AckStatus, DeliveryResult, rejected
from .e2ee.megolm import ENCRYPTED_CONTENT_TYPE
from .envelope import Envelope, Kind, MessageId, RoomId
from .errors import (
    ClockSkew,
    ErrorCode,
    HearthError,
    NotAuthorized,
    ProtocolError,
    QuotaExceeded,
    RemoteProtocolError,
)
from .identity import UserId
from .membership import RoomState, decode_membership
from .membership_log import MembershipLog
from .rooms import direct_room_id

__all__ = [
    "RECENTLY_STORED",
    "ArrivalRules",
    "Decision",
    "Reaction",
    "RecentlyStored",
    "RoomStates",
    "Verdict",
    "appended_result",
    "awaiting_key",
    "direct_partner",
    "error_result",
    "reaches_the_app",
    "room_ruling",
]

RECENTLY_STORED: Final = 65_536
"""Message ids `RecentlyStored` remembers (oldest forgotten first)."""


class Verdict(Enum):
    """What to do with an arriving envelope."""

    STORE = "store"
    """Append it to the room's history; the store's answer sets the ack (`appended_result`)."""
    RELAY = "relay"
    """Hold it in the relay inbox for a user who does not live here (SPEC §11.5.3)."""
    DEFER = "defer"
    """Not now: answered DEFERRED, the sender retries later."""
    REJECT = "reject"
    """Never: answered REJECTED with the refusal's code; the peer is charged (SPEC §11.6)."""
    DISCARD = "discard"
    """From a user our user blocked: answered STORED, so nothing tells them, and dropped
    (SPEC §32.3)."""


class Reaction(Enum):
    """What a newly stored envelope sets off besides its release to the app."""

    APPLY_PRIVATE = "apply_private"
    """Our own user's PRIVATE change from another device (SPEC §22.6)."""
    CREDIT_RECEIPT = "credit_receipt"
    """A RECEIPT: credit the statuses it reports to our users' sent messages (SPEC §16.3)."""
    APPLY_CONTACT_EVENT = "apply_contact_event"
    """Someone else's friend request, acceptance or refusal (SPEC §18)."""
    APPLY_RECALL = "apply_recall"
    """A RECALL: withdraw the message it names and purge its body here (SPEC §31.1)."""
    APPLY_PROFILE = "apply_profile"
    """A user's new profile, kept if its sender may show us one (SPEC §32.1)."""


_NO_REACTION: Final[frozenset[Reaction]] = frozenset()
_APPLY_PRIVATE: Final = frozenset({Reaction.APPLY_PRIVATE})
_CREDIT_RECEIPT: Final = frozenset({Reaction.CREDIT_RECEIPT})
_APPLY_CONTACT_EVENT: Final = frozenset({Reaction.APPLY_CONTACT_EVENT})
_APPLY_RECALL: Final = frozenset({Reaction.APPLY_RECALL})
_APPLY_PROFILE: Final = frozenset({Reaction.APPLY_PROFILE})


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The verdict on one envelope, and the ack result it fixes now (if it fixes one)."""

    verdict: Verdict
    result: DeliveryResult | None = None
    """For DEFER and REJECT; STORE and RELAY get theirs from the store."""
    unknown_device: bool = False
    """Deferred for a device the sender's newest record we hold does not list: look the
    sender's record up again (SPEC §13.5)."""
    unknown_room: bool = False
    """Deferred: our own user's envelope in a room this home holds no state of (a direct room
    another of our homes opened and has not told us of yet): learn the rooms of our user's
    other homes (SPEC §12.2, §23.5), then the retry is stored."""
    store_before_next: bool = False
    """Append what is pending before judging the next item of the batch: a MEMBERSHIP event
    changes what the items after it may do (a batch may hold a CREATE and the ADDs after it,
    each allowed only by the ones before)."""


_STORE: Final = Decision(verdict=Verdict.STORE)
_RELAY: Final = Decision(verdict=Verdict.RELAY)
_HISTORY_VERDICTS: Final = frozenset({Verdict.STORE, Verdict.DEFER})
"""Verdicts of envelopes meant for a room's history here (now or later)."""


class RoomStates(Protocol):
    """The rooms as held here (node/rooms/registry.py, bound to a store transaction)."""

    def state(self, room: RoomId) -> RoomState | None:
        """The room's folded state, loaded on first use; None for a room unknown here."""

    def membership_log(self, room: RoomId) -> MembershipLog:
        """The group's log as held (after `state` loaded it), or an empty one."""


def _nobody(_: UserId) -> bool:
    """No one is blocked (the rules without a block list)."""
    return False


class ArrivalRules:
    """Decides what happens to each arriving envelope for the users who live here."""

    def __init__(
        self,
        local_users: Set[UserId],
        *,
        deferrals: DeferralPolicy = DEFAULT_DEFERRAL_POLICY,
        blocked: Callable[[UserId], bool] = _nobody,
    ) -> None:
        self._local = local_users
        self._budget = DeferralBudget(deferrals)
        self._blocked = blocked
        """Has our user blocked this sender (SPEC §32.3)?"""

    def decide(
        self,
        envelope: Envelope,
        *,
        recipient: UserId,
        device_listed: bool | None,
        rooms: RoomStates,
        now_ms: int,
    ) -> Decision:
        """The verdict on a verified envelope (SPEC §11.2.3, §12.2).

        Args:
            recipient: whose home should keep it (the DELIVER item's recipient).
            device_listed: whether the sender's newest home record we hold lists its device;
                None if we hold no record of the sender.
            rooms: the rooms' states, read only if the rule needs them.
            now_ms: the clock reading, for the deferral budget.
        """
        decision = self._verdict(envelope, recipient in self._local, device_listed, rooms, now_ms)
        if envelope.kind is Kind.MEMBERSHIP and decision.verdict in _HISTORY_VERDICTS:
            return replace(decision, store_before_next=True)
        return decision

    def _verdict(
        self, envelope: Envelope, ours: bool, listed: bool | None, rooms: RoomStates, now_ms: int
    ) -> Decision:
        message_id = envelope.message_id
        if envelope.kind.ephemeral:
            refusal = ProtocolError("ephemeral kinds are not delivered")
            return Decision(verdict=Verdict.REJECT, result=rejected(message_id, refusal))
        try:  # only a RECEIPT may be unsequenced (SPEC §8.5, §20.7): relays check it too
            check_sequencing(envelope)
        except RemoteProtocolError as exc:
            return Decision(verdict=Verdict.REJECT, result=rejected(message_id, exc))
        if not ours:
            return _RELAY
        if self._blocked(envelope.sender_user) and not self._keeps_from_blocked(envelope):
            stored = DeliveryResult(message_id=message_id, status=AckStatus.STORED)
            return Decision(verdict=Verdict.DISCARD, result=stored)
        if listed is False:
            # revoked, or linked after the record we hold: retry once we know more
            deferred = _deferred(message_id)
            return Decision(verdict=Verdict.DEFER, result=deferred, unknown_device=True)
        if (
            envelope.sender_user in self._local
            and envelope.kind not in (Kind.MEMBERSHIP, Kind.PRIVATE)  # PRIVATE: the self room
            and rooms.state(envelope.room) is None
        ):
            # Stored, it would show a room whose members this home cannot send to: a direct
            # room's id does not name its users, and our own message does not name the other.
            deferred = _deferred(message_id)
            return Decision(verdict=Verdict.DEFER, result=deferred, unknown_room=True)
        try:  # SPEC §12.2: decided before anything is stored or held
            ruling = room_ruling(envelope, rooms, self._local)
        except RemoteProtocolError as exc:  # a bad MEMBERSHIP body, a bound reached
            return Decision(verdict=Verdict.REJECT, result=rejected(message_id, exc))
        if ruling is Ruling.ALLOWED:
            return _STORE
        if ruling is Ruling.NEVER:
            refusal = NotAuthorized(f"{envelope.kind.name} not allowed from this sender here")
            return Decision(verdict=Verdict.REJECT, result=rejected(message_id, refusal))
        if envelope.sender_user in self._local or self._budget.take(envelope.sender_user, now_ms):
            return Decision(verdict=Verdict.DEFER, result=_deferred(message_id))
        refusal = NotAuthorized("deferred too often: not a member of this room")
        return Decision(verdict=Verdict.REJECT, result=rejected(message_id, refusal))

    def _keeps_from_blocked(self, envelope: Envelope) -> bool:
        """A blocked user's group MEMBERSHIP events are still folded: every member's home must
        agree on who is in the group (SPEC §12), and they show nothing the user wrote."""
        return envelope.kind is Kind.MEMBERSHIP and not self.is_direct_with_local(envelope)

    def is_direct_with_local(self, envelope: Envelope) -> bool:
        """Is the envelope's room the direct room of its sender and one of our users?"""
        return direct_partner(envelope, self._local) is not None

    def first_seq_if_new(self, envelope: Envelope, *, history: bool = False) -> int:
        """Where the release order starts a sender it never saw (SPEC §8): 1 in a direct room
        with one of our users; after a `history` envelope (`before_joining`), since nothing
        up to it is owed in order (SPEC §8.6); else the first number the guaranteed path
        brought (a group joined later has earlier history we were never sent)."""
        if history:
            return envelope.seq + 1
        return 1 if self.is_direct_with_local(envelope) else envelope.seq

    def before_joining(self, envelope: Envelope, rooms: RoomStates) -> bool:
        """Does a stored envelope of a group sort before where our users joined it, or come
        while none of them is a member (SPEC §8.6)? Then it is history (the welcome's
        MEMBERSHIP events, the shared window): it goes to the app as it is stored, and its
        sender owes us nothing in order up to its number. Never in a direct room, whose two
        members are members from its start, nor for a room unknown here."""
        state = rooms.state(envelope.room)
        if state is None or state.direct:
            return False
        joined = rooms.membership_log(envelope.room).joined_at(self._local)
        return joined is None or envelope.order_key <= joined

    def reactions(self, envelope: Envelope) -> frozenset[Reaction]:
        """What storing `envelope` (new here) sets off besides its release."""
        if envelope.kind is Kind.PRIVATE and envelope.sender_user in self._local:
            return _APPLY_PRIVATE
        if envelope.kind is Kind.RECEIPT:
            return _CREDIT_RECEIPT
        if is_contact_event(envelope) and envelope.sender_user not in self._local:
            return _APPLY_CONTACT_EVENT
        if envelope.kind is Kind.RECALL:
            return _APPLY_RECALL
        if envelope.kind is Kind.PROFILE:
            return _APPLY_PROFILE
        return _NO_REACTION


def room_ruling(envelope: Envelope, rooms: RoomStates, local_users: Set[UserId]) -> Ruling:
    """May the sender write `envelope` into its room here now (SPEC §12.2)? Our own
    MEMBERSHIP changes are checked by this too (SPEC §12.6).

    Raises:
        RemoteProtocolError: a MEMBERSHIP body that does not decode.
        MembershipLimit: the room, or the sender in it, is at its bound (SPEC §12.4).
    """
    is_membership = envelope.kind is Kind.MEMBERSHIP
    if not is_membership and envelope.sender_user in local_users:
        return Ruling.ALLOWED  # our own user, from another certified device
    state = rooms.state(envelope.room)
    if not is_membership and state is not None and state.is_member(envelope.sender_user):
        return Ruling.ALLOWED  # the common case, decided without hashing room ids
    direct_with_local = direct_partner(envelope, local_users) is not None
    if not is_membership or direct_with_local or (state is not None and state.direct):
        return writer_ruling(state, envelope, direct_with_local=direct_with_local)
    change = decode_membership(envelope.body)  # only the remote-error family
    return membership_ruling(rooms.membership_log(envelope.room), envelope, change)


def appended_result(message_id: MessageId, *, stored: bool, duplicate: bool) -> DeliveryResult:
    """The ack result of an append the rules allowed (SPEC §11.3.2): new, the same id stored
    already (as good as stored), or neither (another event holds its slot: REJECTED)."""
    if stored:
        return DeliveryResult(message_id=message_id, status=AckStatus.STORED)
    if duplicate:
        return DeliveryResult(message_id=message_id, status=AckStatus.DUPLICATE)
    return rejected(message_id, ProtocolError("another event holds this slot"))


def reaches_the_app(envelope: Envelope) -> bool:
    """Is a released envelope shown to clients? PRIVATE is our user's bookkeeping between its
    devices (SPEC §22.6) and ROOM_KEY carries keys to them (SPEC §27.5): neither is a message.
    An encrypted envelope this home could not open yet is shown once it opens (SPEC §27.11)."""
    return (
        envelope.kind not in (Kind.PRIVATE, Kind.ROOM_KEY)
        and envelope.content_type != ENCRYPTED_CONTENT_TYPE
    )


def error_result(message_id: MessageId, error: HearthError) -> DeliveryResult:
    """The result for an item refused before the store: a skewed clock (SPEC §4.3) or a full
    relay quota (SPEC §11.5.3) is worth a retry later (DEFERRED with its code); anything else
    is final (REJECTED)."""
    if isinstance(error, ClockSkew | QuotaExceeded):
        code = int(error.code)
        return DeliveryResult(message_id=message_id, status=AckStatus.DEFERRED, code=code)
    return rejected(message_id, error)


def awaiting_key(message_id: MessageId) -> DeliveryResult:
    """The result of an encrypted envelope gossip brought before its ROOM_KEY (SPEC §27.11):
    DEFERRED, not stored, so the guaranteed path brings it again after the key."""
    return DeliveryResult(
        message_id=message_id, status=AckStatus.DEFERRED, code=int(ErrorCode.UNDECRYPTABLE)
    )


def _deferred(message_id: MessageId) -> DeliveryResult:
    return DeliveryResult(
        message_id=message_id, status=AckStatus.DEFERRED, code=int(ErrorCode.NOT_AUTHORIZED)
    )


class RecentlyStored:
    """Message ids the store answered STORED or DUPLICATE lately (bounded, oldest forgotten
    first): a copy arriving by the other path is answered DUPLICATE without verifying it or
    asking the store again. A miss proves nothing; the store decides."""

    def __init__(self, capacity: int = RECENTLY_STORED) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def note(self, results: Iterable[DeliveryResult]) -> None:
        """Remember the ids the store holds, by its answers."""
        for result in results:
            if result.status in (AckStatus.STORED, AckStatus.DUPLICATE):
                self._ids[result.message_id] = None
                if len(self._ids) > self._capacity:
                    self._ids.popitem(last=False)

    def seen(self, message_id: bytes) -> bool:
        return message_id in self._ids


def direct_partner(envelope: Envelope, local_users: Iterable[UserId]) -> UserId | None:
    """Our user whose direct room with the envelope's sender is the envelope's room, if any."""
    for user in local_users:
        if user != envelope.sender_user and direct_room_id(envelope.sender_user, user) == (
            envelope.room
        ):
            return user
    return None
