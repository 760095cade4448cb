"""When a home republishes its unchanged home record on the presence topic (SPEC §32.4.3).

The topic reaches every node, so if every home republished every `RECORD_EVERY` presence
intervals, each node would take in a record (and its copies from each gossip mesh peer) from
every other home: a cost per node that grows with the mesh. Instead a home's period is
`RECORD_EVERY` intervals for each `RECORD_PUBLISHERS` homes (itself and those it heard
republish), rounded up, so the mesh as a whole republishes about `RECORD_PUBLISHERS` records
each `RECORD_EVERY` intervals (10 a minute by default) up to `MAX_HEARD` homes, and N / 10 a
minute past that (each home at least once in `MAX_STRETCH` * `RECORD_EVERY` intervals); a
changed record still goes at once. Every home hears about the same publishers, so the periods
agree. (A period grown by whole `RECORD_EVERY`s made the mesh's rate a sawtooth of its size,
5.5 a minute at 11 homes and 10 at 20, once the count below was right.)

A publication reaches only the peers that follow the topic as it goes out: a home's first, as
it starts, reaches none, and at 50 nodes (started a minute apart, dialled after) the next ones
a period later reached a mesh still forming. Members then held no record of some homes minutes
into sending, and their deliveries to those homes waited as markers until a connection's hello
brought the record (23-140 s, SPEC §20.6). So the record also goes again as soon as the topic's
peers have doubled since it last went out (counted from the fewest seen since, so a home that
lost its peers and found them again republishes too): a few more publications while a home
joins a mesh, none in a steady one.

The homes heard count over this period and the one before: homes that republish in the same
presence interval as we do (a mesh that started or healed at once stays in step) are heard
just before our publication or just after it, and a count cleared at our publication saw only
the ones after, about half: homes started together republished 13 records a minute at 25
homes, 17 at 50 and 18 at 100 instead of 10 (the class alone, driven in step), and 12.5 in a
scale run of 25 nodes (SPEC §20.6).

State: the record last published, the intervals since, the topic's peers it reached (lowered
as peers leave), and the other users heard on the topic since and in the period before (each
at most `MAX_HEARD`).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_HEARD", "MAX_STRETCH", "RECORD_EVERY", "RECORD_PUBLISHERS", "RecordPacing"]

RECORD_EVERY: Final = 6
"""Presence intervals between two publications of an unchanged record in a small mesh."""
RECORD_PUBLISHERS: Final = 10
"""Other homes heard per period before the period stretches: meshes up to this size keep the
one-minute default."""
MAX_STRETCH: Final = 10
"""At most this many `RECORD_EVERY`s between two publications (10 minutes by default), however
many publishers a node hears (a flood of strangers' records cannot silence us for longer)."""
MAX_HEARD: Final = RECORD_PUBLISHERS * MAX_STRETCH
"""Users remembered as heard in a period: enough for the longest stretch, a bound on what
strangers fill (twice: this period and the one before)."""


class RecordPacing:
    """Says, once per presence interval, whether our record is due on the topic."""

    def __init__(self) -> None:
        self._published: bytes | None = None
        self._since = 0
        self._reached = 0
        self._heard: set[bytes] = set()
        self._heard_before: set[bytes] = set()

    @property
    def period(self) -> int:
        """Presence intervals between two publications of an unchanged record, now: the
        homes heard and we share `RECORD_PUBLISHERS` publications per `RECORD_EVERY`
        intervals (rounded up, so at most that many), within `RECORD_EVERY` and the stretch."""
        homes = 1 + len(self._heard | self._heard_before)
        shared = -(-RECORD_EVERY * homes // RECORD_PUBLISHERS)
        return min(max(RECORD_EVERY, shared), RECORD_EVERY * MAX_STRETCH)

    def heard(self, user: bytes) -> None:
        """Another user's record came on the topic."""
        if len(self._heard) < MAX_HEARD:
            self._heard.add(user)

    def due(self, record: bytes, peers: int = 0) -> bool:
        """One presence interval passed, with `peers` following the topic: publish `record`
        now? (It changed, a period went by, or the peers doubled since it went out.) A yes
        starts the next period."""
        self._since += 1
        self._reached = min(self._reached, peers)
        grown = peers > self._reached and peers >= 2 * self._reached
        if record == self._published and self._since < self.period and not grown:
            return False
        self._published, self._since, self._reached = record, 0, peers
        self._heard_before, self._heard = self._heard, set()
        return True
