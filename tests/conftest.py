"""Shared fixtures: a deterministic clock and deterministic randomness (CONVENTIONS §6)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest


class FakeClock:
    """Milliseconds that move only when a test calls `advance`."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


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
