"""Shared fixtures: a deterministic clock and deterministic randomness (CONVENTIONS §6), and
the Hypothesis profiles.

Profiles (`HYPOTHESIS_PROFILE=...`):
- `dev` (the default): every property test runs its full count of examples.
- `quick`: a fifth of each count (at least 10), for a fast loop on a loaded machine or a CI
  job that runs often; `dev` keeps the power, so run it before a merge.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from hypothesis import settings

QUICK_SHARE: Final = 5
"""Under the `quick` profile a property test runs 1/QUICK_SHARE of its examples."""

settings.register_profile("dev")
settings.register_profile("quick", max_examples=100 // QUICK_SHARE)
PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` first (stable otherwise): pytest-xdist hands tests out in this
    order, so the longest start while the short ones fill the other worker, and the run does
    not end with one worker alone on a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def examples(full: int) -> int:
    """`max_examples` for a test that runs `full` examples under the `dev` profile."""
    return full if PROFILE == "dev" else max(10, full // QUICK_SHARE)


class FakeClock:
    """Milliseconds that move only when a test calls `advance`."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


MDNS_LOCK: Final = Path(tempfile.gettempdir()) / "hearthmesh-tests-mdns.lock"


@pytest.fixture
def mdns_alone() -> Iterator[None]:
    """Hold a machine-wide lock while the test runs mDNS nodes: those of two tests running at
    once (two xdist workers, or two checkouts' suites) find each other and meet."""
    with MDNS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def counter_rng(label: str = "test") -> Callable[[int], bytes]:
    """Deterministic bytes: SHA-256 in counter mode over a label."""
    state = {"block": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{label}/{state['block']}".encode()).digest()
            state["block"] += 1
        return out[:n]

    return rng


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    return counter_rng()
