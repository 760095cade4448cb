"""The invariants of `hearthmesh simulate` (SPEC §20.4) and its fault schedule: the checker
passes a clean run and catches each kind of violation; partitions parse; kills are seeded."""

from __future__ import annotations

import pytest

from hearthmesh.tools.cli import main
from hearthmesh.tools.simulate.checker import Acked, Receipt, Seen, check, missing_on
from hearthmesh.tools.simulate.faults import (
    FaultLog,
    PartitionSpecError,
    kill_times,
    loss_rules,
    parse_partition,
)

DEVICE_USER = [0, 1, 2]
"""Three devices, one per user; device 0 sends m1 and m2 (its seq 1 and 2)."""

ACKED = [Acked("m1", 0, 1.0, 1.1), Acked("m2", 0, 2.0, 2.1)]


def _seen(*ids: str) -> list[Seen]:
    seqs = {"m1": 1, "m2": 2}
    return [Seen(m, "d0", seqs[m], 3.0 + i) for i, m in enumerate(ids)]


def _clean() -> tuple[dict[int, list[Seen]], dict[int, dict[str, float]], list[Receipt]]:
    seen = {0: _seen("m1", "m2"), 1: _seen("m1", "m2"), 2: _seen("m1", "m2")}
    acks = {1: {"m1": 3.0, "m2": 4.0}, 2: {"m1": 3.0, "m2": 4.0}}
    receipts = [Receipt("m1", 1, "delivered", 5.0), Receipt("m2", 2, "read", 6.0)]
    return seen, acks, receipts


def test_a_clean_run_passes_with_one_latency_per_recipient_device() -> None:
    seen, acks, receipts = _clean()
    verdict = check(ACKED, seen, acks, receipts, DEVICE_USER, seen)
    assert verdict.ok, verdict.as_json()
    assert (verdict.expected, verdict.delivered) == (4, 4)
    assert sorted(verdict.latencies) == [(1.0, 2.0), (1.0, 2.0), (2.0, 2.0), (2.0, 2.0)]
    assert missing_on(ACKED, seen) == 0


def test_the_checker_catches_a_missing_message_in_the_frames_and_in_the_history() -> None:
    seen, acks, receipts = _clean()
    histories = {**seen, 1: _seen("m2")}
    seen[2] = _seen("m1")
    verdict = check(ACKED, seen, acks, receipts, DEVICE_USER, histories)
    assert verdict.missing == ["m2 on device 2"] and not verdict.ok
    assert verdict.history_missing == ["m1 on device 1"]
    assert missing_on(ACKED, seen) == 1


def test_the_checker_catches_a_message_shown_twice_or_stored_twice() -> None:
    seen, acks, receipts = _clean()
    histories = {**seen, 2: _seen("m1", "m2", "m2")}
    seen[1] = _seen("m1", "m2", "m1")
    verdict = check(ACKED, seen, acks, receipts, DEVICE_USER, histories)
    assert verdict.duplicates == ["m1 x2 on device 1"] and not verdict.ok
    assert verdict.history_duplicates == ["m2 x2 on device 2"]


def test_a_history_out_of_order_fails_and_frames_out_of_order_are_counted() -> None:
    seen, acks, receipts = _clean()
    histories = {**seen, 2: _seen("m2", "m1")}
    verdict = check(ACKED, seen, acks, receipts, DEVICE_USER, histories)
    assert verdict.out_of_order == ["device 2: d0 seq 1 after 2"] and not verdict.ok
    seen[1] = _seen("m2", "m1")  # frames come in store order (SPEC §15.4.3): counted only
    verdict = check(ACKED, seen, acks, receipts, DEVICE_USER, {**seen, 1: _seen("m1", "m2")})
    assert verdict.feed_out_of_order == ["device 1: d0 seq 1 after 2"] and verdict.ok


def test_the_checker_catches_delivered_before_any_device_of_the_user_acked() -> None:
    seen, acks, receipts = _clean()
    early = [*receipts, Receipt("m2", 1, "delivered", 3.5)]  # user 1's device acked at 4.0
    verdict = check(ACKED, seen, acks, early, DEVICE_USER)
    assert verdict.early_receipts == ["delivered of m2 by user 1"] and not verdict.ok
    never = [Receipt("m1", 2, "delivered", 9.0)]
    assert not check(ACKED, seen, {1: acks[1]}, never, DEVICE_USER).ok


def test_a_partition_parses_with_halves_or_named_sides_and_refuses_nonsense() -> None:
    halves = parse_partition("40+30", 5)
    assert (halves.start_s, halves.heal_s, halves.side) == (40.0, 70.0, frozenset({0, 1, 2}))
    assert parse_partition("5+2.5:3,4", 5).side == frozenset({3, 4})
    for bad in ("40", "40+0", "x+3", "1+2:0,1,2", "1+2:7", "1+2:"):
        with pytest.raises(PartitionSpecError):
            parse_partition(bad, 3)


def test_kills_are_seeded_and_spaced_two_thirds_to_four_thirds_apart() -> None:
    times = kill_times(3, 30.0, 600.0)
    assert times == kill_times(3, 30.0, 600.0) != kill_times(4, 30.0, 600.0)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(20.0 <= gap <= 40.0 for gap in gaps) and len(times) >= 14
    assert kill_times(3, 0.0, 600.0) == []


def test_a_nodes_downtime_is_counted_inside_the_window_asked_only() -> None:
    log = FaultLog()
    log.note(10.0, "kill", 1)
    log.note(20.0, "restarted", 1)
    log.note(30.0, "kill", 1)  # still down at the window's end
    log.note(12.0, "kill", 2)
    assert log.down_s(1, 0.0, 100.0) == 80.0
    assert log.down_s(1, 15.0, 35.0) == 10.0
    assert log.down_s(0, 0.0, 100.0) == 0.0
    assert log.down_s(2, 0.0, 12.0) == 0.0


def test_loss_is_one_random_drop_rule_on_the_way_out() -> None:
    assert 'oifname "eth0" numgen random mod 100 < 10 drop' in loss_rules(10.0)


def test_the_command_refuses_a_partition_it_cannot_parse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--nodes", "3", "--partition", "soon"]) == 2
    assert "--partition 'soon'" in capsys.readouterr().err
