"""The collector's passes in a node process while a benchmark watches it: how many of each
generation and the longest, so that a loop stall (`loop_lag`) can be told from a collection.

A pass in any thread holds the GIL, so the loop waits it out wherever it ran (`gc.callbacks`
see them all). Session 10 counted them by hand in `bench api --quick` (none of generation 0 or
1 with `tools/process_gc.py`'s thresholds); this keeps the count in every run's figures.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["GcPauses"]


class GcPauses:
    """Counts passes per generation and the longest, while `watching()`."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.longest_ms = 0.0
        self._started = 0.0

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        self.passes[info["generation"]] += 1
        self.longest_ms = max(self.longest_ms, (now - self._started) * 1000)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        gc.callbacks.append(self._seen)
        try:
            yield
        finally:
            gc.callbacks.remove(self._seen)

    def summary(self) -> dict[str, Any]:
        return {"gc_passes": list(self.passes), "gc_longest_ms": round(self.longest_ms, 3)}
