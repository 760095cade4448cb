"""Rows a home deferred, for the outbox machine (SPEC §11.5.1). Owns: the rows noted.

A home answers DEFERRED what it cannot take yet (a room it does not hold yet, a device its
record of us does not list, SPEC §11.2.3), and the row backs off like a failed one, up to a
minute. Once a home of that destination stores a batch of ours, what it lacked has likely
come, and the backoff grown meanwhile would hold back what the row carries: at a 50-home
group's formation, a room's key shared ahead to a home that learnt of the room later came due
again only after our next message had reached it, which it then showed 5-10 s late (SPEC
§20.6). So the rows it deferred come due at once then, a few at a time and not too often: a
home that stores some of our rows and keeps deferring others must never run out of the
deferrals it grants us (SPEC §12.5) and refuse them.

Pure: the caller passes the time (`now_ms`) in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .envelope import MessageId

__all__ = ["DEFERRED_AGAIN_MS", "DEFERRED_AGAIN_ROWS", "MAX_DEFERRED_NOTED", "DeferredRows"]

MAX_DEFERRED_NOTED: Final = 4096
"""Rows noted over all destinations; past it the destination noted first is forgotten (its
rows keep their backoff alone)."""
DEFERRED_AGAIN_ROWS: Final = 16
"""A destination's noted rows due again at once, the oldest first (the rest the next time)..."""
DEFERRED_AGAIN_MS: Final = 2_000
"""... at most once in this long after its last deferral: 8 rows a second, half what a
home's deferrals of one sender refill (SPEC §12.5)."""


@dataclass(slots=True)
class _Noted:
    rows: dict[MessageId, None] = field(default_factory=dict)
    """Oldest first."""
    not_before_ms: int = 0


class DeferredRows:
    """Each destination's rows its home deferred, bounded (the module docstring)."""

    def __init__(self) -> None:
        self._noted: dict[bytes, _Noted] = {}
        """By destination, the one noted first, first."""
        self._rows = 0

    def note(self, destination: bytes, message_ids: Iterable[MessageId], now_ms: int) -> None:
        """A home of `destination` deferred these rows now: due again no sooner than
        `DEFERRED_AGAIN_MS` from now."""
        noted = self._noted.setdefault(destination, _Noted())
        before = len(noted.rows)
        noted.rows.update(dict.fromkeys(message_ids))
        noted.not_before_ms = now_ms + DEFERRED_AGAIN_MS
        self._rows += len(noted.rows) - before
        while self._rows > MAX_DEFERRED_NOTED:
            self._rows -= len(self._noted.pop(next(iter(self._noted))).rows)

    def forget(self, destination: bytes, message_ids: Iterable[MessageId]) -> None:
        """These rows of `destination` ended (acked, refused): no longer noted."""
        noted = self._noted.get(destination)
        if noted is None:
            return
        for message_id in message_ids:
            if message_id in noted.rows:
                del noted.rows[message_id]
                self._rows -= 1
        if not noted.rows:
            del self._noted[destination]

    def due(self, destination: bytes, now_ms: int) -> list[MessageId]:
        """A home of `destination` stored a batch of ours: the rows it deferred that are due
        again now (at most `DEFERRED_AGAIN_ROWS`; none within `DEFERRED_AGAIN_MS` of its
        last deferral), no longer noted."""
        noted = self._noted.get(destination)
        if noted is None or now_ms < noted.not_before_ms:
            return []
        due = list(noted.rows)[:DEFERRED_AGAIN_ROWS]
        for message_id in due:
            del noted.rows[message_id]
        self._rows -= len(due)
        if not noted.rows:
            del self._noted[destination]
        return due

    def __len__(self) -> int:
        """Rows noted (at most `MAX_DEFERRED_NOTED`)."""
        return self._rows
