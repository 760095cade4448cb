"""The one place that reads the system clock (CONVENTIONS §1.6).

State owned here: the node's HLC, its newest stamp issued or merged (`HybridClock`, on the
event loop's thread), and the offset our home reports with whom it tells of each correction
(`CorrectedClock`, SPEC §24).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
        self._held = last
        """The newest stamp issued here or merged from another node: what history can hold."""

    def restore(self, last: Timestamp) -> None:
        """Resume after the newest stamp this node stored before a restart."""
        self.last = self._held = last

    def stamp(self) -> Timestamp:
        """A timestamp for a local event, later than every earlier one."""
        self.last = self._held = send(self.last, self._clock.now_ms())
        return self.last

    def clock_corrected(self) -> None:
        """The physical clock was moved (SPEC §24): forget how far a wrong physical time alone
        pushed `last`. Every stamp issued or seen stays below the next one, but a device that
        merged a stamp before its home corrected it does not keep stamping minutes ahead."""
        self.last = self._held

    def ephemeral(self) -> Timestamp:
        """A stamp for a typing or presence event: physical time, and `last` stays as it is.

        Such events are never stored, so they need no place in history order; keeping them out
        of `last` means a clock corrected after start (SPEC §24) leaves no trace in history.
        """
        return Timestamp(wall_ms=self._clock.now_ms(), counter=0)

    def merge(self, remote: Timestamp) -> None:
        """Adopt a remote stamp. Raises ClockSkew (and adopts nothing) past the drift bound."""
        self.last = receive(self.last, remote, self._clock.now_ms())
        self._held = max(self._held, remote)


class CorrectedClock:
    """A clock moved by an offset that this node's home reports (SPEC §4.4, §24)."""

    def __init__(self, base: Clock) -> None:
        self._base = base
        self.offset_ms = 0
        """Added to the base clock: the home node's estimate of how far behind we run."""
        self._listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        return self._base.now_ms() + self.offset_ms

    def on_correction(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every correction."""
        self._listeners.append(listener)

    def correct(self, by_ms: int) -> None:
        """Move the clock by `by_ms`, as our home sees it."""
        self.offset_ms += by_ms
        for listener in self._listeners:
            listener()
