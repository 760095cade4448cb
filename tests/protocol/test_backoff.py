"""Outbox retry timing of SPEC §11.5."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.backoff import BACKOFF_BASE_MS, BACKOFF_CAP_MS, next_attempt_ms


def fixed(value: int) -> st.SearchStrategy[bytes]:
    return st.just(value.to_bytes(4, "big"))


def test_first_retry_waits_between_half_and_one_base() -> None:
    assert next_attempt_ms(1, 1000, lambda n: b"\x00" * n) == 1000 + BACKOFF_BASE_MS // 2
    low_jitter_max = next_attempt_ms(1, 1000, lambda n: (BACKOFF_BASE_MS // 2).to_bytes(n, "big"))
    assert low_jitter_max == 1000 + BACKOFF_BASE_MS


def test_delay_doubles_then_caps() -> None:
    zero = lambda n: b"\x00" * n  # noqa: E731 - the smallest jitter shows the nominal half
    halves = [next_attempt_ms(a, 0, zero) for a in range(1, 12)]
    assert halves[:4] == [125, 250, 500, 1000]
    assert halves[-1] == BACKOFF_CAP_MS // 2


@given(attempts=st.integers(0, 10_000), entropy=st.binary(min_size=4, max_size=4))
def test_delay_stays_within_bounds(attempts: int, entropy: bytes) -> None:
    delay = next_attempt_ms(attempts, 0, lambda n: entropy)
    assert BACKOFF_BASE_MS // 2 <= delay <= BACKOFF_CAP_MS
