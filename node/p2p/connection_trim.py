"""Which of a host's connections to close: a peer's duplicates, then the least recently used
idle ones over the high watermark (SPEC §10.17).

Sans-I/O: a pure function of a snapshot (`ConnectionView`s, the protected peers, the time),
in the manner of go-libp2p's connmgr; `connection_manager` takes the snapshot on the trio
thread and closes what this names.

Duplicates: two ends that dial each other at once each hold two connections, and py-libp2p
trims only when a connection is added and never one within its grace (SPEC §20.6 counted
~10-13 a node at 50 nodes). Both ends must close the *same* one, or the pair loses both, so
the rule is one both compute from what both see: keep the connections dialled by the lower
peer id (the higher one's if it dialled none), close the other end's. Two dialled by the same
end are told apart only by that end (the other sees them complete in an order of its own), so
it alone closes all but its oldest. A connection carrying a stream beyond gossip's standing
ones is left for a later pass.

State: none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CLOSED_DUPLICATE",
    "CLOSED_IDLE",
    "ConnectionView",
    "TrimPolicy",
    "dht_kept",
    "to_close",
]

CLOSED_DUPLICATE: Final = "duplicate"
"""A close reason (`P2PHost.connections_closed`): ours, one of a peer's two or more
connections, the same one at both ends."""
CLOSED_IDLE: Final = "idle"
"""A close reason: ours, an idle connection to a peer we keep nothing with, over the high
watermark."""


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """One open connection as the manager saw it."""

    key: int
    """Tells the connection apart within one snapshot (the caller maps it back)."""
    peer: str
    outbound: bool
    """We dialled it."""
    opened_s: float
    used_s: float
    """When a stream on it last opened or closed (gossip's standing streams aside), else
    `opened_s`."""
    busy: int
    """Streams open on it beyond gossip's standing ones (one still negotiating counts)."""
    relayed: bool = False


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """go-libp2p's connmgr shape: above `high`, idle connections close down to `low`."""

    low: int = 16
    high: int = 24
    grace_s: float = 30.0
    """A connection younger than this is never closed as idle (its first streams come)."""
    idle_s: float = 30.0
    """Unused this long before it counts as idle."""
    duplicate_grace_s: float = 5.0
    """Both ends see both connections by then (handshakes complete in their own order)."""
    dht_per_bucket: int = 2
    """Connected routing-table peers kept in each bucket, so walks start from a table that
    answers without a dial."""
    tick_s: float = 5.0
    """How often the connections are looked over (a pass is a loop over them: ~60 at 50
    nodes)."""


def to_close(
    connections: Sequence[ConnectionView],
    *,
    own_peer: str,
    protected: frozenset[str] | set[str],
    now_s: float,
    policy: TrimPolicy,
) -> list[tuple[ConnectionView, str]]:
    """The connections to close now and why (`CLOSED_DUPLICATE`, `CLOSED_IDLE`)."""
    duplicates = _duplicates(connections, own_peer, now_s, policy)
    closing = {conn.key for conn in duplicates}
    left = [conn for conn in connections if conn.key not in closing]
    idle = _idle_over_high(left, protected, now_s, policy)
    return [(conn, CLOSED_DUPLICATE) for conn in duplicates] + [
        (conn, CLOSED_IDLE) for conn in idle
    ]


def _duplicates(
    connections: Sequence[ConnectionView], own_peer: str, now_s: float, policy: TrimPolicy
) -> list[ConnectionView]:
    by_peer: dict[str, list[ConnectionView]] = {}
    for conn in connections:
        if not conn.relayed:  # a relayed one is a path of its own, swapped by libp2p
            by_peer.setdefault(conn.peer, []).append(conn)
    doomed: list[ConnectionView] = []
    for peer, conns in by_peer.items():
        if len(conns) < 2 or any(now_s - c.opened_s < policy.duplicate_grace_s for c in conns):
            continue
        lower = min(own_peer, peer)
        by_lower = [c for c in conns if _dialler(c, own_peer) == lower]
        kept = by_lower or conns  # all dialled by the higher one
        extra = [c for c in conns if c not in kept]
        if _dialler(kept[0], own_peer) == own_peer and len(kept) > 1:
            extra += sorted(kept, key=lambda c: (c.opened_s, c.key))[1:]
        doomed += [c for c in extra if not c.busy]
    return doomed


def _dialler(conn: ConnectionView, own_peer: str) -> str:
    return own_peer if conn.outbound else conn.peer


def _idle_over_high(
    connections: Sequence[ConnectionView],
    protected: frozenset[str] | set[str],
    now_s: float,
    policy: TrimPolicy,
) -> list[ConnectionView]:
    if len(connections) <= policy.high:
        return []
    idle = [
        conn
        for conn in connections
        if conn.peer not in protected
        and not conn.busy
        and now_s - conn.opened_s >= policy.grace_s
        and now_s - conn.used_s >= policy.idle_s
    ]
    idle.sort(key=lambda conn: (conn.used_s, conn.key))  # least recently used first
    return idle[: len(connections) - policy.low]


def dht_kept(
    buckets: Iterable[Sequence[str]], connected: frozenset[str] | set[str], per_bucket: int
) -> set[str]:
    """The first `per_bucket` connected peers of each routing-table bucket."""
    kept: set[str] = set()
    for bucket in buckets:
        kept.update([peer for peer in bucket if peer in connected][:per_bucket])
    return kept
