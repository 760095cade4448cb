"""The one place that reads the system clock (CONVENTIONS §1.6)."""

from __future__ import annotations

import time
from typing import Protocol

from hearthmesh.protocol.hlc import ZERO, Timestamp, receive, send

__all__ = ["Clock", "CorrectedClock", "HybridClock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock milliseconds; tests pass a fake."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Milliseconds since the Unix epoch from the system clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class HybridClock:
    """This node's HLC (SPEC §4): stamps sends and merges every remote stamp it accepts.

    Lives on the event loop thread; the physical time comes from a `Clock`.
    """

    def __init__(self, clock: Clock, last: Timestamp = ZERO) -> None:
        self._clock = clock
        self.last = last

    def stamp(self) -> Timestamp:
        """A timestamp for a local event, later than every earlier one."""
        self.last = send(self.last, self._clock.now_ms())
        return self.last

    def ephemeral(self) -> Timestamp:
        """A stamp for a typing or presence event: physical time, and `last` stays as it is.

        Such events are never stored, so they need no place in history order; keeping them out
        of `last` means a clock corrected after start (SPEC §24) leaves no trace in history.
        """
        return Timestamp(wall_ms=self._clock.now_ms(), counter=0)

    def merge(self, remote: Timestamp) -> None:
        """Adopt a remote stamp. Raises ClockSkew (and adopts nothing) past the drift bound."""
        self.last = receive(self.last, remote, self._clock.now_ms())


class CorrectedClock:
    """A clock moved by an offset that this node's home reports (SPEC §4.4, §24)."""

    def __init__(self, base: Clock) -> None:
        self._base = base
        self.offset_ms = 0
        """Added to the base clock: the home node's estimate of how far behind we run."""

    def now_ms(self) -> int:
        return self._base.now_ms() + self.offset_ms
