"""Destinations that are down, for the outbox machine (SPEC §11.5.2). Owns: each outage.

A destination (a recipient user's homes, or one of our own other homes) whose delivery failed
for want of a reachable home is down: the failed entries are parked in the store, and so are new
ones once it failed twice in a row; it is tried again with a probe (a few entries) after the
§11.5 delay for its consecutive failures, or at once when it shows up (a connection from one of
its homes). A user whose last failure found no home to try at all (no record names one) is
absent from that failure on: the outbox leaves markers for it, not entries.
Any ack from one of its homes ends the outage.

A healed partition brings no new connection, so the probe is what finds a home back: its delay
is capped at `probe_max_ms` (a few seconds, not the minute of SPEC §11.5.1), and a home that
connects while a probe is under way is probed again as soon as that probe ends. A failure where
every home tried was connected and refused the stream (`refused`) is no lost path a heal
brings back: the same home says no again, so that delay keeps §11.5.1's minute cap.

The probes due are kept in a heap by time: a group's absent members are ~1,000 destinations
down for good, and scanning them all for the next probe at every re-arm of the outbox's timer
was 4 % of a sending home's event loop (py-spy, 10 nodes and 1,024 members).

Pure: the caller passes the time (`now_ms`) and the randomness (`rng`) in.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .backoff import BACKOFF_CAP_MS, next_attempt_ms
from .identity import Rng

__all__ = ["PROBE_MAX_MS", "Outages"]


PROBE_MAX_MS: Final = 5_000
"""Longest wait between two probes of a down destination (SPEC §11.5.2)."""


@dataclass(slots=True)
class _Outage:
    failures: int
    retry_at_ms: int
    probing: bool = False
    revived: bool = False
    """One of its homes connected while a probe was under way: probe again at once."""
    homeless: bool = False
    """Its last failure found no home to try: no record names one (a lookup found none)."""
    since_ms: int = 0
    """When it went down (0: before a restart): how long its deliveries waited, for the log."""
    was_homeless: bool = False
    """Absent at some time in this outage (`revive` clears `homeless`, not this)."""


class Outages:
    """Which destinations are down, and when each is probed next."""

    def __init__(self, *, rng: Rng, probe_max_ms: int = PROBE_MAX_MS) -> None:
        self._rng = rng
        self._probe_max_ms = probe_max_ms
        self._down: dict[bytes, _Outage] = {}
        self._due: list[tuple[int, bytes]] = []
        """(retry_at_ms, destination) of each probe set; one that no longer matches its
        outage (reached, probing, or set again since) is dropped when it comes to the top."""

    def down(self) -> list[bytes]:
        """Every destination down now, sorted."""
        return sorted(self._down)

    def parking(self, destination: bytes) -> bool:
        """True if new entries for `destination` are to be parked, not sent: it failed twice
        in a row (one failure may be a passing hiccup) and no probe is under way."""
        outage = self._down.get(destination)
        return outage is not None and outage.failures >= 2 and not outage.probing

    def absent(self, destination: bytes) -> bool:
        """True if its last failure found no home to try: new envelopes for it leave a marker,
        not an entry each (SPEC §11.5.2). One such failure is enough: no record names a home of
        it, so it is no connection's hiccup, and each envelope stored as entries before it was
        absent is relayed (for a group's ~1,000 absent members, ~1,000 relay copies a send).
        Also while it is probed: such a probe moves nothing until a lookup finds a record,
        which makes it known (`revive`)."""
        outage = self._down.get(destination)
        return outage is not None and outage.homeless

    def failed(
        self,
        destination: bytes,
        now_ms: int,
        *,
        homeless: bool = False,
        refused: bool = False,
        not_before_ms: int = 0,
    ) -> bool:
        """An attempt (or probe) found no reachable home (`homeless`: none to try at all;
        `refused`: each home tried was connected and refused the stream); probed again after
        the delay, not before `not_before_ms`. True if it was up until now."""
        outage = self._down.get(destination)
        failures = 1 if outage is None else outage.failures + 1
        if outage is not None and outage.revived:
            retry_at = now_ms  # a home connected during the probe: that one may answer now
        else:
            cap_ms = BACKOFF_CAP_MS if refused else self._probe_max_ms
            retry_at = next_attempt_ms(failures, now_ms, self._rng, cap_ms=cap_ms)
            retry_at = max(retry_at, not_before_ms)
        since_ms, was_homeless = (
            (now_ms, homeless)
            if outage is None
            else (outage.since_ms, homeless or outage.was_homeless)
        )
        self._down[destination] = _Outage(
            failures=failures,
            retry_at_ms=retry_at,
            homeless=homeless,
            since_ms=since_ms,
            was_homeless=was_homeless,
        )
        heapq.heappush(self._due, (retry_at, destination))
        return outage is None

    def known_nowhere(self, destination: bytes, now_ms: int) -> bool:
        """No record names a home of `destination`: down and homeless (so absent) now, unless
        it is down already; probed after the first failure's delay, as if a batch had failed.
        True if it was not down until now."""
        if destination in self._down:
            return False
        self.failed(destination, now_ms, homeless=True)
        return True

    def reached(self, destination: bytes) -> tuple[int, bool] | None:
        """One of its homes answered: the outage that ended, if it was down until now: when
        it began (0: before a restart) and whether no record named a home of it in it."""
        outage = self._down.pop(destination, None)
        return None if outage is None else (outage.since_ms, outage.was_homeless)

    def restored(self, destinations: Iterable[bytes]) -> None:
        """After a restart: these have parked entries; probe each at once."""
        for destination in destinations:
            if destination not in self._down:
                self._down[destination] = _Outage(failures=1, retry_at_ms=0)
                heapq.heappush(self._due, (0, destination))

    def next_probe_ms(self) -> int | None:
        """When the earliest probe not under way is due; None if there is none."""
        due = self._due
        while due and not self._current(*due[0]):
            heapq.heappop(due)
        return due[0][0] if due else None

    def due_probes(self, now_ms: int) -> list[bytes]:
        """Destinations whose probe is due, earliest first, now marked as probing."""
        found: list[bytes] = []
        due = self._due
        while due and due[0][0] <= now_ms:
            retry_at_ms, destination = heapq.heappop(due)
            if self._current(retry_at_ms, destination):
                self._down[destination].probing = True
                found.append(destination)
        return found

    def _current(self, retry_at_ms: int, destination: bytes) -> bool:
        """Is this heap item the probe its destination waits for now?"""
        outage = self._down.get(destination)
        return outage is not None and not outage.probing and outage.retry_at_ms == retry_at_ms

    def forget(self, destination: bytes) -> None:
        """Nothing is parked for it any more: no probe needed."""
        self._down.pop(destination, None)

    def revive(self, destinations: Iterable[bytes]) -> bool:
        """One of their homes connected: probe each of `destinations` that is down at once;
        True if a probe is due now."""
        found = False
        for destination in destinations:
            outage = self._down.get(destination)
            if outage is None:
                continue
            outage.homeless = False  # a home of it is known now: entries, not markers
            if outage.probing:
                outage.revived = True  # its probe may have dialled before the home was back
            else:
                outage.retry_at_ms = 0
                heapq.heappush(self._due, (0, destination))
                found = True
        return found
