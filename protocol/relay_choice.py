"""Which connected peer relays for a recipient whose homes are away (SPEC §11.7).

Trust, not peer-id order: an id that sorts first costs an attacker a few seconds of grinding,
so the order of ids says nothing. Candidates come in tiers: the homes of users who share a
room with our user (contacts and co-members: someone our user chose to talk to runs them),
then peers of long good standing (connected for a while, exchanges that went well, no points),
then any other peer as a last resort. Within a tier the order is random (the caller's `rng`),
so no one can arrange to be picked. Pure: the node supplies the facts and the randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["RelayCandidate", "RelayPolicy", "RelayTier", "choose_relays", "relay_tier"]


class RelayTier(IntEnum):
    """Lower is preferred."""

    CO_MEMBER_HOME = 0
    GOOD_STANDING = 1
    STRANGER = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayPolicy:
    """The numbers of SPEC §11.7."""

    good_standing_ms: int = 10 * 60_000
    """Connected at least this long (default 10 min) ..."""
    good_standing_exchanges: int = 8
    """... with at least this many exchanges that went well (default 8: batches it delivered
    with nothing to charge, acks of ours it signed) and no points, a peer is of good standing."""
    relays_tried: int = 2
    """Relays tried for one batch (default 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCandidate:
    """What the node knows of one connected peer."""

    peer: str
    co_member_home: bool
    """A home of a user who shares a room with our user (a contact or co-member)."""
    connected_ms: int
    """How long its current connection has lasted."""
    exchanges: int
    """Exchanges with it that went well during that connection."""
    points: int
    """Its current standing points (SPEC §11.6): any at all and it is no better than new."""


def relay_tier(candidate: RelayCandidate, policy: RelayPolicy) -> RelayTier:
    """The tier of one candidate."""
    if candidate.co_member_home:
        return RelayTier.CO_MEMBER_HOME
    if (
        candidate.points == 0
        and candidate.connected_ms >= policy.good_standing_ms
        and candidate.exchanges >= policy.good_standing_exchanges
    ):
        return RelayTier.GOOD_STANDING
    return RelayTier.STRANGER


def choose_relays(
    candidates: Iterable[RelayCandidate], policy: RelayPolicy, rng: Callable[[int], bytes]
) -> list[str]:
    """Up to `policy.relays_tried` peers, best tier first, at random within a tier."""
    ranked = sorted((relay_tier(c, policy), rng(8), c.peer) for c in candidates)
    return [peer for _, _, peer in ranked[: policy.relays_tried]]
