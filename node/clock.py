"""The one place that reads the system clock (CONVENTIONS §1.6)."""

from __future__ import annotations

import time
from typing import Protocol

from hearthmesh.protocol.hlc import ZERO, Timestamp, receive, send

__all__ = ["Clock", "HybridClock", "SystemClock"]


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

    def merge(self, remote: Timestamp) -> None:
        """Adopt a remote stamp. Raises ClockSkew (and adopts nothing) past the drift bound."""
        self.last = receive(self.last, remote, self._clock.now_ms())
