"""The node's clocks: a correction from the home takes back what a wrong clock alone did."""

from __future__ import annotations

from hearthmesh.node.clock import CorrectedClock, HybridClock
from hearthmesh.protocol.hlc import Timestamp

FIVE_MINUTES_MS = 300_000


class _Fixed:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def test_a_correction_forgets_a_wrong_clock_but_keeps_every_stamp_seen() -> None:
    base = _Fixed(1_000_000 + FIVE_MINUTES_MS)  # five minutes fast
    clock = CorrectedClock(base)
    hlc = HybridClock(clock)
    clock.on_correction(hlc.clock_corrected)
    seen = Timestamp(wall_ms=1_000_050, counter=3)
    hlc.merge(seen)  # before the correction: the merge also takes the wrong physical time
    assert hlc.last.wall_ms == base.now
    clock.correct(-FIVE_MINUTES_MS)
    stamp = hlc.stamp()
    assert seen < stamp and stamp.wall_ms < 1_000_000 + 1_000  # not five minutes ahead


def test_a_correction_never_goes_below_a_stamp_already_issued() -> None:
    base = _Fixed(2_000_000)
    clock = CorrectedClock(base)
    hlc = HybridClock(clock)
    clock.on_correction(hlc.clock_corrected)
    issued = hlc.stamp()
    clock.correct(-FIVE_MINUTES_MS)
    assert hlc.stamp() > issued


def test_an_ephemeral_stamp_takes_physical_time_and_leaves_history_order_alone() -> None:
    """SPEC §24.2: typing and presence carry the physical time and never advance the HLC: a
    wrong clock at the time of a typing event leaves no trace in the next stored stamp."""
    base = _Fixed(1_000_000 + FIVE_MINUTES_MS)  # five minutes fast
    clock = CorrectedClock(base)
    hlc = HybridClock(clock)
    clock.on_correction(hlc.clock_corrected)
    before = hlc.last
    typing = hlc.ephemeral()
    assert typing == Timestamp(wall_ms=base.now, counter=0) and hlc.last == before
    clock.correct(-FIVE_MINUTES_MS)
    assert hlc.stamp().wall_ms == 1_000_000  # the typing's wrong time did not carry over
