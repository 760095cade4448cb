"""When a home republishes its unchanged home record on the presence topic (SPEC §32.4.3).

The topic reaches every node, so if every home republished every `RECORD_EVERY` presence
intervals, each node would take in a record (and its copies from each gossip mesh peer) from
every other home: a cost per node that grows with the mesh. Instead a home stretches its
period by one `RECORD_EVERY` for each `RECORD_PUBLISHERS` other homes it heard republish since
its own last publication, so the mesh as a whole republishes about `RECORD_PUBLISHERS` records
a period, however large it is; a changed record still goes at once. Every home sees about the
same publishers in one period, so the periods agree.

A publication reaches only the peers that follow the topic as it goes out: a home's first, as
it starts, reaches none, and at 50 nodes (started a minute apart, dialled after) the next ones
a period later reached a mesh still forming. Members then held no record of some homes minutes
into sending, and their deliveries to those homes waited as markers until a connection's hello
brought the record (23-140 s, SPEC §20.6). So the record also goes again as soon as the topic's
peers have doubled since it last went out (counted from the fewest seen since, so a home that
lost its peers and found them again republishes too): a few more publications while a home
joins a mesh, none in a steady one.

State: the record last published, the intervals since, the topic's peers it reached (lowered
as peers leave), and the other users heard on the topic since (at most `MAX_HEARD`).
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
"""Users remembered as heard: enough for the longest stretch, a bound on what strangers fill."""


class RecordPacing:
    """Says, once per presence interval, whether our record is due on the topic."""

    def __init__(self) -> None:
        self._published: bytes | None = None
        self._since = 0
        self._reached = 0
        self._heard: set[bytes] = set()

    @property
    def period(self) -> int:
        """Presence intervals between two publications of an unchanged record, now."""
        stretch = 1 + len(self._heard) // RECORD_PUBLISHERS
        return RECORD_EVERY * min(stretch, MAX_STRETCH)

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
        self._heard.clear()
        return True
