"""`AheadPlan` (protocol/e2ee/ahead.py, SPEC §27.10.3): when a room's key goes ahead, with the
time given by the test: once its changes are quiet (or at the latest `max_wait_ms` after the
first), at each home's own offset, within a bucket per room, and with bounded state."""

from __future__ import annotations

from hearthmesh.protocol.e2ee import AheadPlan, AheadPolicy
from hearthmesh.protocol.envelope import RoomId

GROUP, OTHER = RoomId(b"g" * 32), RoomId(b"o" * 32)
NO_SPREAD = AheadPolicy(quiet_ms=2_000, max_wait_ms=10_000, spread_ms=0, burst=2, refill_ms=30_000)


def test_a_rooms_key_goes_ahead_once_its_changes_are_quiet() -> None:
    plan = AheadPlan(NO_SPREAD, b"device")
    for now_ms in range(0, 6_000, 1_000):  # a formation: an add each second for 5 s
        plan.room_changed(GROUP, now_ms)
        assert plan.take_due(now_ms) == []
    assert plan.timer_ms() == 5_000 + 2_000
    assert plan.take_due(6_999) == []
    assert plan.take_due(7_000) == [GROUP]  # shared once, the formation's changes with it
    assert plan.timer_ms() is None


def test_changes_that_never_stop_postpone_it_no_longer_than_the_max_wait() -> None:
    plan = AheadPlan(NO_SPREAD, b"device")
    due: list[int] = []
    for now_ms in range(0, 60_000, 500):  # a change every 0.5 s for a minute
        plan.room_changed(GROUP, now_ms)
        if plan.take_due(now_ms):
            due.append(now_ms)
    assert due[0] == 10_000  # the max wait, not never
    assert len(due) <= NO_SPREAD.burst + 60_000 // NO_SPREAD.refill_ms  # the bucket bounds it


def test_a_churned_room_shares_its_burst_then_one_per_refill() -> None:
    plan = AheadPlan(NO_SPREAD, b"device")
    shared: list[int] = []
    for now_ms in range(0, 120_000, 2_500):  # a record churned every 2.5 s: quiet each time
        plan.record_changed(GROUP, now_ms)  # not watched yet: ignored
        plan.room_changed(GROUP, now_ms)
        if plan.take_due(now_ms + 2_000):
            shared.append(now_ms + 2_000)
    assert shared[:2] == [2_000, 4_500]  # the burst
    refill_ms = NO_SPREAD.refill_ms  # then a token back each refill, from the first
    assert shared[2:] == [32_000, 62_000, 92_000]
    assert all(k < NO_SPREAD.burst + at // refill_ms for k, at in enumerate(shared))


def test_a_record_makes_only_a_watched_room_due() -> None:
    plan = AheadPlan(NO_SPREAD, b"device")
    plan.record_changed(GROUP, 0)  # no change of its members seen: not watched
    assert plan.timer_ms() is None
    plan.room_changed(GROUP, 0)
    assert plan.take_due(2_000) == [GROUP]
    plan.record_changed(GROUP, 5_000)  # a member's device linked: due again
    assert plan.take_due(7_000) == [GROUP]


def test_homes_that_formed_together_share_apart_each_at_its_own_moment() -> None:
    spread = AheadPolicy(quiet_ms=2_000, spread_ms=3_000)
    due = {AheadPlan(spread, bytes([i]) * 32).due_ms(GROUP) for i in range(1)}
    assert due == {None}  # nothing changed
    plans = [AheadPlan(spread, bytes([i]) * 32) for i in range(50)]
    for plan in plans:
        plan.room_changed(GROUP, 0)
    moments = [plan.due_ms(GROUP) or 0 for plan in plans]
    assert all(2_000 <= at < 5_000 for at in moments)
    assert len(set(moments)) > 40  # spread over the window, not at once
    again = AheadPlan(spread, bytes([7]) * 32)
    again.room_changed(GROUP, 0)
    assert again.due_ms(GROUP) == moments[7]  # the same home, the same moment
    plans[7].room_changed(OTHER, 0)
    assert plans[7].due_ms(OTHER) != moments[7]  # another room, another moment


def test_the_rooms_watched_are_bounded_the_oldest_forgotten() -> None:
    plan = AheadPlan(AheadPolicy(max_rooms=3, spread_ms=0), b"device")
    rooms = [RoomId(bytes([i]) * 32) for i in range(5)]
    for now_ms, room in enumerate(rooms):
        plan.room_changed(room, now_ms)
    assert list(plan.watched) == rooms[2:]
    assert sorted(plan.take_due(10_000)) == sorted(rooms[2:])  # nothing pending of the others
    plan.record_changed(rooms[0], 20_000)  # forgotten: its records make it due no more
    assert plan.timer_ms() is None
    plan.room_changed(rooms[3], 20_000)  # changed again: now the newest
    plan.room_changed(rooms[0], 20_000)
    assert list(plan.watched) == [rooms[4], rooms[3], rooms[0]]
