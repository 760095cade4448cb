"""Hybrid logical clocks (Kulkarni et al. 2014), SPEC §4.

A timestamp is (wall ms, counter). `send` stamps a local event, `receive` merges a remote stamp;
both are pure functions of the last stamp and the caller's physical time, so a clock that steps
backwards never makes a stamp go backwards. A remote stamp further ahead than MAX_DRIFT_MS is
rejected with `ClockSkew` and never adopted (SPEC §4.3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .errors import ClockSkew, MalformedMessage

__all__ = [
    "MAX_COUNTER",
    "MAX_DRIFT_MS",
    "MAX_WALL_MS",
    "TIMESTAMP_BYTES",
    "ZERO",
    "ClockOffset",
    "Timestamp",
    "decode_timestamp",
    "encode_timestamp",
    "estimate_offset",
    "receive",
    "send",
]

MAX_DRIFT_MS: Final = 60_000
"""How far a remote wall time may lead our physical clock (SPEC §4.3)."""

MAX_WALL_MS: Final = (1 << 64) - 1
MAX_COUNTER: Final = (1 << 32) - 1
TIMESTAMP_BYTES: Final = 12

_WIRE: Final = struct.Struct(">QI")


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """A hybrid logical clock reading; ordering is (wall_ms, counter)."""

    wall_ms: int
    """Milliseconds since the Unix epoch, the largest physical time seen so far."""
    counter: int
    """Events seen at the same `wall_ms`: breaks ties where physical time did not advance."""

    def __post_init__(self) -> None:
        if not (0 <= self.wall_ms <= MAX_WALL_MS and 0 <= self.counter <= MAX_COUNTER):
            raise MalformedMessage(f"timestamp out of range: ({self.wall_ms}, {self.counter})")


ZERO: Final = Timestamp(wall_ms=0, counter=0)


def _next(wall_ms: int, counter: int) -> Timestamp:
    """Counter overflow moves the wall by 1 ms instead of wrapping (SPEC §4.2)."""
    if counter > MAX_COUNTER:
        return Timestamp(wall_ms=wall_ms + 1, counter=0)
    return Timestamp(wall_ms=wall_ms, counter=counter)


def send(last: Timestamp, now_ms: int) -> Timestamp:
    """Stamp a local or send event: strictly later than `last`, never behind `now_ms`."""
    if now_ms > last.wall_ms:
        return Timestamp(wall_ms=now_ms, counter=0)
    return _next(last.wall_ms, last.counter + 1)


def receive(last: Timestamp, remote: Timestamp, now_ms: int) -> Timestamp:
    """Merge a remote stamp: the result is later than both `last` and `remote`.

    Raises:
        ClockSkew: `remote` leads `now_ms` by more than MAX_DRIFT_MS; nothing is adopted.
    """
    if remote.wall_ms - now_ms > MAX_DRIFT_MS:
        raise ClockSkew(f"remote clock {remote.wall_ms - now_ms} ms ahead (bound {MAX_DRIFT_MS})")
    wall = max(last.wall_ms, remote.wall_ms, now_ms)
    if wall == last.wall_ms == remote.wall_ms:
        counter = max(last.counter, remote.counter) + 1
    elif wall == last.wall_ms:
        counter = last.counter + 1
    elif wall == remote.wall_ms:
        counter = remote.counter + 1
    else:
        counter = 0
    return _next(wall, counter)


def encode_timestamp(ts: Timestamp) -> bytes:
    """12 bytes: wall_ms u64 big-endian | counter u32 big-endian; byte order is time order."""
    return _WIRE.pack(ts.wall_ms, ts.counter)


def decode_timestamp(data: bytes) -> Timestamp:
    """Inverse of `encode_timestamp`. Raises MalformedMessage on a wrong length."""
    if len(data) != TIMESTAMP_BYTES:
        raise MalformedMessage(f"timestamp must be {TIMESTAMP_BYTES} bytes, got {len(data)}")
    wall_ms, counter = _WIRE.unpack(data)
    return Timestamp(wall_ms=wall_ms, counter=counter)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockOffset:
    """The seed's three-timestamp estimate of a device clock against its home node (SPEC §4.4)."""

    offset_ms: int
    """receive time (node clock) minus send time (device clock); positive: device is slow."""
    corrected_event_ms: int
    """The event time moved onto the node's clock: event time + offset."""


def estimate_offset(*, event_ms: int, send_ms: int, receive_ms: int) -> ClockOffset:
    """Estimate a device's clock offset from one message's three timestamps.

    Args:
        event_ms: when the event happened, by the device clock.
        send_ms: when the device sent it, by the device clock.
        receive_ms: when the home node received it, by the node clock.
    """
    offset = receive_ms - send_ms
    return ClockOffset(offset_ms=offset, corrected_event_ms=event_ms + offset)
