"""The one place that reads the system clock (CONVENTIONS §1.6)."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock milliseconds; tests pass a fake."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Milliseconds since the Unix epoch from the system clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
