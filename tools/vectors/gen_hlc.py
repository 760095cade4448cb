"""Generate protocol/vectors/hlc.json: HLC send, receive and encoding cases (SPEC §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.errors import ClockSkew
from hearthmesh.protocol.hlc import MAX_COUNTER, MAX_DRIFT_MS, Timestamp, encode_timestamp
from hearthmesh.protocol.hlc import receive as hlc_receive
from hearthmesh.protocol.hlc import send as hlc_send

from .common import VECTORS_DIR, write_vectors

__all__ = ["generate"]


def _ts(pair: list[int]) -> Timestamp:
    return Timestamp(wall_ms=pair[0], counter=pair[1])


def _pair(ts: Timestamp) -> list[int]:
    return [ts.wall_ms, ts.counter]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Compute every expectation with the implementation, for review and for other impls."""
    sends: list[tuple[list[int], int, str]] = [
        ([1000, 0], 2000, "physical time advanced: take it, counter 0"),
        ([1000, 4], 1000, "same wall time: counter + 1"),
        ([5000, 2], 1000, "physical clock stepped back: keep wall, counter + 1"),
        ([1000, MAX_COUNTER], 1000, "counter overflow moves wall by 1 ms, counter 0"),
    ]
    receives: list[tuple[list[int], list[int], int, str]] = [
        ([1000, 3], [1000, 7], 990, "equal wall times: max counter + 1"),
        ([1000, 3], [900, 9], 990, "local wall is largest: local counter + 1"),
        ([1000, 3], [1200, 9], 990, "remote wall is largest: remote counter + 1"),
        ([1000, 3], [1200, 9], 5000, "physical time is largest: counter 0"),
        ([0, 0], [61_000, 0], 1000, "remote exactly MAX_DRIFT_MS ahead is accepted"),
    ]
    valid: list[dict[str, Any]] = []
    for last, now_ms, note in sends:
        expect = hlc_send(_ts(last), now_ms)
        valid.append(
            {"op": "send", "last": last, "now_ms": now_ms, "expect": _pair(expect), "note": note}
        )
    for last, remote, now_ms, note in receives:
        expect = hlc_receive(_ts(last), _ts(remote), now_ms)
        valid.append(
            {
                "op": "receive",
                "last": last,
                "remote": remote,
                "now_ms": now_ms,
                "expect": _pair(expect),
                "note": note,
            }
        )
    for pair, note in (
        ([0, 0], "zero"),
        ([1_700_000_000_000, 1], "a 2023 wall time"),
        ([(1 << 64) - 1, MAX_COUNTER], "largest stamp"),
    ):
        valid.append(
            {
                "op": "encode",
                "timestamp": pair,
                "expect_hex": encode_timestamp(_ts(pair)).hex(),
                "note": note,
            }
        )
    invalid: list[dict[str, Any]] = [
        {
            "op": "receive",
            "last": [1000, 0],
            "remote": [1000 + MAX_DRIFT_MS + 1 + 9000, 0],
            "now_ms": 10_000,
            "error": ClockSkew.__name__,
            "note": "remote more than MAX_DRIFT_MS ahead: rejected, never adopted",
        },
        {
            "op": "receive",
            "last": [0, 0],
            "remote": [MAX_DRIFT_MS + 1001, 0],
            "now_ms": 1000,
            "error": ClockSkew.__name__,
            "note": "one millisecond past the bound",
        },
        {
            "op": "decode",
            "hex": "00000000000003e8000000",
            "error": "MalformedMessage",
            "note": "11 bytes: a timestamp is exactly 12",
        },
    ]
    return write_vectors(
        "hlc",
        spec="SPEC.md §4",
        function="hearthmesh.protocol.hlc.send / receive / encode_timestamp / decode_timestamp",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
