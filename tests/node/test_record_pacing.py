"""When a home republishes its unchanged record on the presence topic (SPEC §32.4.3): every
sixth interval in a small mesh, stretched as more homes are heard, so the mesh-wide rate of
records stays put as the mesh grows; a changed record goes at once."""

from __future__ import annotations

from hearthmesh.node.mesh.record_pacing import (
    MAX_HEARD,
    MAX_STRETCH,
    RECORD_EVERY,
    RECORD_PUBLISHERS,
    RecordPacing,
)

RECORD = b"record v1"


def _intervals_until_due(pacing: RecordPacing, record: bytes = RECORD) -> int:
    for interval in range(1, 10 * RECORD_EVERY * MAX_STRETCH):
        if pacing.due(record):
            return interval
    raise AssertionError("never due")


def _hear(pacing: RecordPacing, others: int) -> None:
    for n in range(others):
        pacing.heard(n.to_bytes(32, "big"))


def test_a_small_mesh_republishes_every_sixth_interval_and_a_change_at_once() -> None:
    pacing = RecordPacing()
    assert pacing.due(RECORD)  # the first round publishes
    _hear(pacing, RECORD_PUBLISHERS - 1)
    assert _intervals_until_due(pacing) == RECORD_EVERY
    assert pacing.due(b"record v2")  # changed: at once, whatever the period


def test_the_period_stretches_with_the_homes_heard_so_the_mesh_wide_rate_stays_flat() -> None:
    """The period is `RECORD_EVERY` intervals per `RECORD_PUBLISHERS` homes (us and those
    heard), rounded up: the mesh's publications per `RECORD_EVERY` intervals stay at most
    `RECORD_PUBLISHERS` and near it at every size, not a sawtooth of whole stretches."""
    for others, expected in ((9, 6), (10, 7), (15, 10), (24, 15), (49, 30), (98, 60)):
        pacing = RecordPacing()
        assert pacing.due(RECORD)
        _hear(pacing, others)
        period = _intervals_until_due(pacing)
        assert period == expected
        published = (others + 1) * RECORD_EVERY / period
        assert 0.9 * RECORD_PUBLISHERS <= published <= RECORD_PUBLISHERS


def test_homes_heard_count_for_this_period_and_the_next_and_twice_counts_once() -> None:
    pacing = RecordPacing()
    assert pacing.due(RECORD)
    _hear(pacing, 30)
    _hear(pacing, 30)
    assert _intervals_until_due(pacing) == 19  # 31 homes: 3.1 publishers' shares
    assert _intervals_until_due(pacing) == 19  # those 30 still count, heard a period ago
    assert _intervals_until_due(pacing) == RECORD_EVERY  # nobody heard in two periods


def test_a_home_that_publishes_last_of_a_round_still_counts_the_round() -> None:
    """SPEC §32.4.3: homes that started (or healed) together republish in step, each at its
    own second of the same interval. The last of a round heard all the others just before its
    own publication; a count cleared there heard nobody since, so it went again after
    `RECORD_EVERY` intervals, round after round, and the mesh republished more the larger it
    was (25 homes in step: 13 a minute, 50: 17). The period before still counts."""
    pacing = RecordPacing()
    _hear(pacing, 24)  # the other 24 homes' round, a few seconds before ours
    assert pacing.due(RECORD)
    assert _intervals_until_due(pacing) == 15  # 25 homes: 2.5 publishers' shares
    assert _intervals_until_due(pacing) == RECORD_EVERY  # nobody heard in two periods


def _mesh_rate_a_minute(homes: int, minutes: int = 60) -> float:
    """Records a minute the whole mesh republishes, its second half-hour: `homes` homes started
    together, each at its own second of the first interval (in step), every record heard by
    every other home at once."""
    pacings = [RecordPacing() for _ in range(homes)]
    published = 0
    for interval in range(6 * minutes):
        for n, pacing in enumerate(pacings):  # in the order of their seconds
            if pacing.due(RECORD, 6):
                published += interval >= 3 * minutes
                for other in pacings:
                    if other is not pacing:
                        other.heard(n.to_bytes(32, "big"))
    return published / (minutes / 2)


def test_homes_in_step_republish_about_ten_records_a_minute_whatever_their_number() -> None:
    """SPEC §32.4.3, §20.6: the mesh's rate stays flat as it grows, up to `MAX_HEARD` homes
    (before, homes in step republished 13 a minute at 25, 17 at 50, 18 at 100)."""
    for homes in (10, 25, 50, 100):
        assert 9.0 <= _mesh_rate_a_minute(homes) <= 10.5
    assert _mesh_rate_a_minute(150) == 15.0  # each home once in 10 minutes: N / 10


def test_a_flood_of_strangers_records_stretches_the_period_only_so_far() -> None:
    pacing = RecordPacing()
    assert pacing.due(RECORD)
    _hear(pacing, 100 * MAX_HEARD)
    assert _intervals_until_due(pacing) == RECORD_EVERY * MAX_STRETCH


def test_the_record_goes_again_each_time_the_topics_peers_doubled_since_it_went_out() -> None:
    """SPEC §32.4.3: a home's first record goes out before it has peers; it goes again as the
    topic's peers grow (1, 2, 4, 8: a mesh forming), not for a peer more in a steady mesh,
    and again as peers come back after it lost them."""
    pacing = RecordPacing()
    assert pacing.due(RECORD, 0)  # at the start: nobody hears it
    assert not pacing.due(RECORD, 0)
    went = [peers for peers in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16) if pacing.due(RECORD, peers)]
    assert went == [1, 2, 4, 8, 16]
    assert [pacing.due(RECORD, peers) for peers in (17, 20, 31)] == [False] * 3
    assert not pacing.due(RECORD, 3)  # most peers gone: nothing new to tell those left
    assert pacing.due(RECORD, 6)  # back, doubled from the fewest: they may have missed it
