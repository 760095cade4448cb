"""Which connections the manager closes (node/p2p/connection_trim.py, SPEC §10.17): a pure
function of a snapshot, driven from both ends of each pair."""

from __future__ import annotations

from hearthmesh.node.p2p.connection_trim import (
    CLOSED_DUPLICATE,
    CLOSED_IDLE,
    ConnectionView,
    TrimPolicy,
    dht_kept,
    to_close,
)

LOW, HIGH = "peer-a", "peer-b"  # LOW < HIGH
POLICY = TrimPolicy(low=2, high=4, grace_s=30.0, idle_s=30.0, duplicate_grace_s=5.0)


def seen_from(own: str, other: str, dialler: str, key: int, **kwargs: float) -> ConnectionView:
    """One connection of the pair as `own` sees it: `dialler` opened it."""
    fields = {"opened_s": 0.0, "used_s": 0.0, "busy": 0, **kwargs}
    return ConnectionView(
        key=key,
        peer=other,
        outbound=dialler == own,
        opened_s=fields["opened_s"],
        used_s=fields["used_s"],
        busy=int(fields["busy"]),
    )


def closed_keys(own: str, views: list[ConnectionView], now_s: float = 100.0) -> list[int]:
    verdict = to_close(views, own_peer=own, protected=set(), now_s=now_s, policy=POLICY)
    return [view.key for view, _ in verdict]


def test_both_ends_of_a_pair_that_dialled_each_other_close_the_same_one() -> None:
    """Key 1 dialled by the lower peer id, key 2 by the higher: each end closes key 2 (the
    higher one's), so the pair keeps one connection, never none."""
    for own, other in ((LOW, HIGH), (HIGH, LOW)):
        views = [seen_from(own, other, LOW, 1), seen_from(own, other, HIGH, 2)]
        verdict = to_close(views, own_peer=own, protected=set(), now_s=100.0, policy=POLICY)
        assert [(view.key, why) for view, why in verdict] == [(2, CLOSED_DUPLICATE)]


def test_a_duplicate_within_its_grace_or_with_a_stream_open_is_left() -> None:
    for own, other in ((LOW, HIGH), (HIGH, LOW)):
        young = [seen_from(own, other, LOW, 1), seen_from(own, other, HIGH, 2, opened_s=97.0)]
        assert closed_keys(own, young) == []
        busy = [seen_from(own, other, LOW, 1), seen_from(own, other, HIGH, 2, busy=1)]
        assert closed_keys(own, busy) == []
        # the kept one busy is no reason to keep the other
        kept_busy = [seen_from(own, other, LOW, 1, busy=3), seen_from(own, other, HIGH, 2)]
        assert closed_keys(own, kept_busy) == [2]


def test_two_dialled_by_one_end_are_closed_by_that_end_alone_all_but_its_oldest() -> None:
    """The other end sees the two complete in an order of its own, so it closes nothing."""
    for dialler, other in ((LOW, HIGH), (HIGH, LOW)):
        own_view = [
            seen_from(dialler, other, dialler, 7, opened_s=2.0),
            seen_from(dialler, other, dialler, 5, opened_s=1.0),
            seen_from(dialler, other, dialler, 9, opened_s=3.0),
        ]
        assert sorted(closed_keys(dialler, own_view)) == [7, 9]
        their_view = [seen_from(other, dialler, dialler, k, opened_s=1.0) for k in (5, 7, 9)]
        assert closed_keys(other, their_view) == []


def test_over_the_high_mark_the_least_recently_used_idle_close_down_to_the_low_mark() -> None:
    """Seven connections, high 4, low 2: the three that may close do, least recently used
    first; none that is protected, busy, within its grace or used within `idle_s`."""
    views = [
        ConnectionView(key=1, peer="p1", outbound=True, opened_s=0.0, used_s=10.0, busy=0),
        ConnectionView(key=2, peer="p2", outbound=False, opened_s=0.0, used_s=5.0, busy=0),
        ConnectionView(key=3, peer="kept", outbound=True, opened_s=0.0, used_s=0.0, busy=0),
        ConnectionView(key=4, peer="p4", outbound=True, opened_s=0.0, used_s=0.0, busy=2),
        ConnectionView(key=5, peer="p5", outbound=True, opened_s=90.0, used_s=90.0, busy=0),
        ConnectionView(key=6, peer="p6", outbound=True, opened_s=0.0, used_s=20.0, busy=0),
        ConnectionView(key=7, peer="p7", outbound=True, opened_s=0.0, used_s=80.0, busy=0),
    ]
    verdict = to_close(views, own_peer="me", protected={"kept"}, now_s=100.0, policy=POLICY)
    assert [(view.key, why) for view, why in verdict] == [
        (2, CLOSED_IDLE),  # used 95 s ago
        (1, CLOSED_IDLE),
        (6, CLOSED_IDLE),  # 7 was used 20 s ago, 5 is 10 s old: below `idle_s` and the grace
    ]
    at_high = [v for v in views if v.key in (1, 2, 6, 7)]
    assert to_close(at_high, own_peer="me", protected=set(), now_s=100.0, policy=POLICY) == []
    many = [
        ConnectionView(key=k, peer=f"p{k}", outbound=True, opened_s=0.0, used_s=k, busy=0)
        for k in range(10)
    ]
    verdict = to_close(many, own_peer="me", protected=set(), now_s=100.0, policy=POLICY)
    assert [view.key for view, _ in verdict] == list(range(8))  # down to the low mark, 2


def test_a_duplicate_closes_before_the_count_for_the_watermark() -> None:
    views = [seen_from(LOW, HIGH, LOW, 1), seen_from(LOW, HIGH, HIGH, 2)] + [
        ConnectionView(key=k, peer=f"p{k}", outbound=True, opened_s=0.0, used_s=90.0, busy=0)
        for k in range(3, 6)
    ]
    assert closed_keys(LOW, views) == [2]  # four left: not over the high mark


def test_a_few_connected_peers_of_each_dht_bucket_are_kept() -> None:
    buckets = [["a", "b", "c", "d"], ["e"], ["f", "g", "h"]]
    connected = {"b", "c", "d", "e", "h", "x"}
    assert dht_kept(buckets, connected, 2) == {"b", "c", "e", "h"}
