"""Room authority (SPEC §12.2): who may write which kind of envelope into which room.

One rule for every way an envelope reaches a room here: a deliver batch, gossip, sync between
our homes, a gap fetch, and our own writes. It is decided before anything is stored or held:

| kind             | direct room              | group                                       |
|------------------|--------------------------|---------------------------------------------|
| MEMBERSHIP       | never                    | `membership.ruling` at the event's place    |
| any other stored | the two users only       | members; others wait (DEFER, bounded)       |

`Ruling.NEVER` is a final refusal (NOT_AUTHORIZED, the peer is charged); `Ruling.NOT_YET` is
answered DEFERRED, because the event that allows it (the CREATE, an ADD, a ROLE) may still be on
its way, but each sender user gets only `DeferralPolicy.burst` such answers (refilled at
`per_s`); past that it is refused like NEVER. Our own user's envelopes (from another of our
devices) are never refused for being early.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from .envelope import Envelope, Kind
from .identity import UserId
from .membership import MembershipChange, RoomState, Ruling, ruling
from .membership_log import MembershipLog

__all__ = [
    "DEFAULT_DEFERRAL_POLICY",
    "DeferralBudget",
    "DeferralPolicy",
    "Ruling",
    "gossip_ruling",
    "membership_ruling",
    "writer_ruling",
]


def writer_ruling(
    state: RoomState | None,
    envelope: Envelope,
    *,
    direct_with_local: bool,
    change: MembershipChange | None = None,
    state_at: RoomState | None = None,
) -> Ruling:
    """May `envelope`'s sender write it into its room (SPEC §12.2)?

    Args:
        state: the room's current state here, None if the room is unknown.
        direct_with_local: the room is the direct room of the sender and one of our users.
        change: the decoded body of a MEMBERSHIP envelope.
        state_at: for MEMBERSHIP, the fold of the events that sort before it (default `state`).
    """
    direct = direct_with_local or (state is not None and state.direct)
    if envelope.kind is Kind.MEMBERSHIP:
        if direct or change is None:
            return Ruling.NEVER
        at = state_at or state or RoomState(room=envelope.room)
        return ruling(at, envelope.sender_user, change, at_ms=envelope.hlc.wall_ms)
    if state is None:
        # an unknown room: a direct room opens with its first message; a group we may be
        # about to be added to (its membership events are on their way)
        return Ruling.ALLOWED if direct_with_local else Ruling.NOT_YET
    if state.is_member(envelope.sender_user):
        return Ruling.ALLOWED
    return Ruling.NEVER if state.direct else Ruling.NOT_YET


def membership_ruling(log: MembershipLog, envelope: Envelope, change: MembershipChange) -> Ruling:
    """`writer_ruling` for a group's MEMBERSHIP event, at its place in the log's history.

    An event the log holds already is ALLOWED (storing it again is a no-op).

    Raises:
        MembershipLimit: the room, or the sender in it, is at its bound (SPEC §12.4).
    """
    if envelope.message_id in log:
        return Ruling.ALLOWED
    return writer_ruling(
        log.state,
        envelope,
        direct_with_local=False,
        change=change,
        state_at=log.state_before(envelope),
    )


def gossip_ruling(state: RoomState | None, envelope: Envelope) -> Ruling:
    """The topic validator's part of the rule (SPEC §14.1), from the state held in memory.

    MEMBERSHIP never travels on gossip; a direct room takes only its two users. A group's
    non-member is NOT_YET (dropped, never charged: their ADD may be on its way). A room whose
    state is not in memory is left to admission (ALLOWED here).
    """
    if envelope.kind is Kind.MEMBERSHIP:
        return Ruling.NEVER
    if state is None or state.is_member(envelope.sender_user):
        return Ruling.ALLOWED
    return Ruling.NEVER if state.direct else Ruling.NOT_YET


@dataclass(frozen=True, slots=True, kw_only=True)
class DeferralPolicy:
    """How often one sender user may be answered DEFERRED for authority (SPEC §12.5)."""

    burst: int = 1024
    """Deferrals a sender may have at once."""
    per_s: int = 16
    """Deferrals a sender gets back per second."""
    max_senders: int = 4096
    """Senders remembered; the least recently deferred is forgotten first."""


DEFAULT_DEFERRAL_POLICY: Final = DeferralPolicy()


class DeferralBudget:
    """A token bucket per sender user, in a bounded table; time is passed in."""

    def __init__(self, policy: DeferralPolicy = DEFAULT_DEFERRAL_POLICY) -> None:
        self.policy = policy
        self._buckets: OrderedDict[UserId, tuple[float, int]] = OrderedDict()

    def take(self, sender: UserId, now_ms: int) -> bool:
        """Spend one deferral of `sender`; False if none is left (refuse instead)."""
        tokens, last_ms = self._buckets.pop(sender, (float(self.policy.burst), now_ms))
        refill = max(0, now_ms - last_ms) * self.policy.per_s / 1000
        tokens = min(float(self.policy.burst), tokens + refill)
        granted = tokens >= 1
        self._buckets[sender] = (tokens - 1 if granted else tokens, now_ms)
        while len(self._buckets) > self.policy.max_senders:
            self._buckets.popitem(last=False)
        return granted
