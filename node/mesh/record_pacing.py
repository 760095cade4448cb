"""When a home republishes its unchanged home record on the presence topic (SPEC §32.4.3).

The topic reaches every node, so if every home republished every `RECORD_EVERY` presence
intervals, each node would take in a record (and its copies from each gossip mesh peer) from
every other home: a cost per node that grows with the mesh. Instead a home stretches its
period by one `RECORD_EVERY` for each `RECORD_PUBLISHERS` other homes it heard republish since
its own last publication, so the mesh as a whole republishes about `RECORD_PUBLISHERS` records
a period, however large it is; a changed record still goes at once. Every home sees about the
same publishers in one period, so the periods agree.

State: the record last published, the intervals since, and the other users heard on the topic
since (at most `MAX_HEARD`).
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

    def due(self, record: bytes) -> bool:
        """One presence interval passed: publish `record` now? (It changed, or a period
        went by.) A yes starts the next period."""
        self._since += 1
        if record == self._published and self._since < self.period:
            return False
        self._published, self._since = record, 0
        self._heard.clear()
        return True
