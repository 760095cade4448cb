"""Per-sender ordering of SPEC §8."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import SequenceOverflow
from hearthmesh.protocol.ordering import Gap, SenderSequencer


def test_in_order_items_are_released_at_once() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer()
    assert seq.offer("a", 1, "a1") == ["a1"]
    assert seq.offer("a", 2, "a2") == ["a2"]
    assert seq.next_seq("a") == 3


def test_early_item_waits_and_gap_is_reported() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer()
    assert seq.offer("a", 3, "a3") == []
    assert seq.offer("a", 6, "a6") == []
    assert seq.gaps() == [Gap(sender="a", first=1, last=2), Gap(sender="a", first=4, last=5)]
    assert seq.offer("a", 1, "a1") == ["a1"]
    assert seq.offer("a", 2, "a2") == ["a2", "a3"]
    assert seq.gaps() == [Gap(sender="a", first=4, last=5)]


def test_duplicates_change_nothing() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer()
    seq.offer("a", 1, "a1")
    seq.offer("a", 3, "a3")
    assert seq.offer("a", 1, "again") == []
    assert seq.offer("a", 3, "again") == []
    assert seq.offer("a", 2, "a2") == ["a2", "a3"]


def test_senders_are_independent() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer()
    assert seq.offer("a", 2, "a2") == []
    assert seq.offer("b", 1, "b1") == ["b1"]
    assert seq.gaps() == [Gap(sender="a", first=1, last=1)]


def test_beyond_the_window_is_refused_and_nothing_is_held() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer(window=10)
    with pytest.raises(SequenceOverflow):
        seq.offer("a", 11, "far")
    assert seq.held() == 0
    assert seq.offer("a", 10, "edge") == []
    assert seq.held() == 1


def test_resume_starts_a_sender_later() -> None:
    seq: SenderSequencer[str, str] = SenderSequencer()
    seq.offer("a", 7, "a7")
    seq.resume("a", 6)
    assert seq.offer("a", 5, "old") == []
    assert seq.offer("a", 6, "a6") == ["a6", "a7"]


@given(st.permutations(list(range(1, 40))), st.lists(st.integers(1, 39), max_size=20))
def test_any_arrival_order_releases_each_once_in_order(
    order: list[int], duplicates: list[int]
) -> None:
    seq: SenderSequencer[str, int] = SenderSequencer()
    released: list[int] = []
    for number in [*order[:20], *duplicates, *order[20:]]:
        released += seq.offer("a", number, number)
    assert released == list(range(1, 40))
    assert seq.gaps() == []
    assert seq.held() == 0


def test_skipping_to_a_number_hands_over_what_was_held_below_it_and_the_run_it_frees() -> None:
    seq: SenderSequencer[str, int] = SenderSequencer()
    assert seq.offer("a", 1, 1) == [1]
    assert seq.offer("a", 3, 3) == []
    assert seq.offer("a", 6, 6) == []
    assert seq.offer("a", 7, 7) == []
    assert seq.skip_to("a", 6) == [3, 6, 7]
    assert seq.next_seq("a") == 8 and seq.gaps() == [] and seq.held() == 0
    assert seq.skip_to("a", 5) == []  # never backwards
    assert seq.next_seq("a") == 8
    assert seq.skip_to("b", 4) == [] and seq.next_seq("b") == 4
