"""HLC rules of SPEC §4: exact cases, the drift bound, and properties under any interleaving."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import ClockSkew, MalformedMessage
from hearthmesh.protocol.hlc import (
    MAX_COUNTER,
    MAX_DRIFT_MS,
    ZERO,
    Timestamp,
    decode_timestamp,
    encode_timestamp,
    estimate_offset,
    receive,
    send,
)

WALL = st.integers(min_value=0, max_value=1 << 50)
TIMESTAMPS = st.builds(
    Timestamp, wall_ms=WALL, counter=st.integers(min_value=0, max_value=MAX_COUNTER)
)


def ts(wall: int, counter: int = 0) -> Timestamp:
    return Timestamp(wall_ms=wall, counter=counter)


def test_send_takes_physical_time_when_it_advanced() -> None:
    assert send(ts(1000, 7), 1001) == ts(1001, 0)


def test_send_counts_when_physical_time_stands_or_steps_back() -> None:
    assert send(ts(1000, 7), 1000) == ts(1000, 8)
    assert send(ts(1000, 7), 10) == ts(1000, 8)


def test_counter_overflow_moves_wall_instead_of_wrapping() -> None:
    assert send(ts(1000, MAX_COUNTER), 1000) == ts(1001, 0)
    assert receive(ts(1000, 0), ts(1000, MAX_COUNTER), 1000) == ts(1001, 0)


def test_receive_accepts_exactly_the_bound_and_rejects_one_more() -> None:
    assert receive(ZERO, ts(1000 + MAX_DRIFT_MS), 1000) == ts(1000 + MAX_DRIFT_MS, 1)
    with pytest.raises(ClockSkew):
        receive(ZERO, ts(1001 + MAX_DRIFT_MS), 1000)


def test_rejected_stamp_is_never_adopted() -> None:
    last = ts(5000, 3)
    with pytest.raises(ClockSkew):
        receive(last, ts(5000 + 10 * MAX_DRIFT_MS), 5000)
    assert send(last, 5000) == ts(5000, 4)  # the caller still holds `last`: nothing moved


def test_encoding_is_fixed_width_and_round_trips() -> None:
    stamp = ts(1_700_000_000_123, 42)
    data = encode_timestamp(stamp)
    assert len(data) == 12
    assert decode_timestamp(data) == stamp


@pytest.mark.parametrize("length", [0, 11, 13])
def test_decode_rejects_wrong_length(length: int) -> None:
    with pytest.raises(MalformedMessage):
        decode_timestamp(bytes(length))


def test_out_of_range_fields_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        Timestamp(wall_ms=-1, counter=0)
    with pytest.raises(MalformedMessage):
        Timestamp(wall_ms=0, counter=MAX_COUNTER + 1)


def test_three_timestamp_offset_estimate() -> None:
    # device clock 5 minutes slow: sent at 1_000 device time, received at 301_000 node time
    offset = estimate_offset(event_ms=900, send_ms=1_000, receive_ms=301_000)
    assert offset.offset_ms == 300_000
    assert offset.corrected_event_ms == 300_900


@given(a=TIMESTAMPS, b=TIMESTAMPS)
def test_byte_order_is_time_order(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) == (encode_timestamp(a) < encode_timestamp(b))


@given(last=TIMESTAMPS, remote=TIMESTAMPS, now_ms=WALL)
def test_receive_is_later_than_both_inputs(last: Timestamp, remote: Timestamp, now_ms: int) -> None:
    try:
        merged = receive(last, remote, now_ms)
    except ClockSkew:
        assert remote.wall_ms - now_ms > MAX_DRIFT_MS
        return
    assert merged > last
    assert merged > remote
    assert merged.wall_ms >= now_ms


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "receive"]),
        st.integers(min_value=-120_000, max_value=120_000),  # the wall clock may step back
        TIMESTAMPS,
    ),
    max_size=60,
)


@given(steps=STEPS, start=WALL)
def test_never_goes_backwards_under_any_interleaving(
    steps: list[tuple[str, int, Timestamp]], start: int
) -> None:
    last, now_ms = ZERO, start
    for op, step_ms, remote in steps:
        now_ms = max(0, now_ms + step_ms)
        try:
            stamp = send(last, now_ms) if op == "send" else receive(last, remote, now_ms)
        except ClockSkew:
            continue
        assert stamp > last
        last = stamp
