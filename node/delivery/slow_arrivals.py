"""The messages that reached our app late, and what brought them (SPEC §20.6).

A group's last member is the one whose copy came last; at 50 nodes that was seconds to minutes
for some messages, and neither end said why. So each message released to the app more than
`SLOW_MS` after its sender stamped it is noted with the path that released it: the gossip
fast path, a deliver stream (from the sender's home, or a relay: the peer says which), a gap
fetch, or the room key that opened it late. `simulate --scale` reads them from the status.
One comparison per message; only the slow ones are kept, the latest `KEPT`.

State: the latest slow arrivals, oldest first (`latest`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.protocol.envelope import Envelope

__all__ = ["KEPT", "SLOW_MS", "SlowArrival", "SlowArrivals"]

SLOW_MS: Final = 2_000
"""Later than this after its stamp: a member's copy the fast path (under 1 s) did not bring."""

KEPT: Final = 256
"""Slow arrivals kept, the latest: a run's slow messages, not a history."""


@dataclass(frozen=True, slots=True)
class SlowArrival:
    """One message released late: its id, what released it (`gossip`, `deliver:<peer>`,
    `fetch:<peer>`, or `key`: opened late) and how long after its stamp."""

    message_id: bytes
    route: str
    late_ms: int


class SlowArrivals:
    """The latest messages released to the app later than `SLOW_MS`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.latest: deque[SlowArrival] = deque(maxlen=KEPT)

    def note(self, released: Iterable[Envelope], route: str, peer: str | None = None) -> None:
        """Keep those of `released` that came late, by `route` (from `peer`: `route:peer`,
        named only for a late one, since this runs for every batch)."""
        now_ms = self._clock.now_ms()
        for envelope in released:
            late_ms = now_ms - envelope.hlc.wall_ms
            if late_ms > SLOW_MS:
                named = route if peer is None else f"{route}:{peer}"
                self.latest.append(SlowArrival(envelope.message_id, named, late_ms))
