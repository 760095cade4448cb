"""The bridge's reading of how the trio thread ended."""

from __future__ import annotations

from hearthmesh.node.p2p.bridge import _only_a_closing_race

CLOSED = RuntimeError("Nursery is closed to new arrivals")


def test_libp2p_taking_a_stream_while_it_closes_is_a_clean_stop() -> None:
    nested = ExceptionGroup("trio", [ExceptionGroup("libp2p", [CLOSED])])
    assert _only_a_closing_race(nested)


def test_any_other_failure_still_counts() -> None:
    assert not _only_a_closing_race(CLOSED)  # not from a nursery at all
    assert not _only_a_closing_race(ExceptionGroup("trio", [CLOSED, ValueError("boom")]))
    assert not _only_a_closing_race(ExceptionGroup("trio", [RuntimeError("other")]))
