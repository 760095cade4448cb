"""Retry timing for the outbox (SPEC §11.5): exponential backoff with jitter, rng passed in."""

from __future__ import annotations

from typing import Final

from .identity import Rng

__all__ = ["BACKOFF_BASE_MS", "BACKOFF_CAP_MS", "next_attempt_ms"]

BACKOFF_BASE_MS: Final = 250
BACKOFF_CAP_MS: Final = 60_000


def next_attempt_ms(attempts: int, now_ms: int, rng: Rng, *, cap_ms: int = BACKOFF_CAP_MS) -> int:
    """When to retry after `attempts` failed tries: base·2^(attempts-1), capped, "equal jitter".

    The delay is uniform in [d/2, d] for d = min(cap, base·2^(attempts-1)), so retries of many
    senders spread out after an outage yet never come sooner than half the nominal delay.
    `cap_ms` lowers the cap where a late retry costs more than a try (SPEC §11.5.2 probes).
    """
    exponent = min(max(attempts - 1, 0), 30)
    delay = min(cap_ms, BACKOFF_CAP_MS, BACKOFF_BASE_MS << exponent)
    half = delay // 2
    jitter = int.from_bytes(rng(4), "big") % (half + 1)
    return now_ms + half + jitter
