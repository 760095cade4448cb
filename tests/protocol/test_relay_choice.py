"""Relay choice on trust, not id order (protocol/relay_choice.py, SPEC §11.7)."""

from __future__ import annotations

from collections import Counter

from hearthmesh.protocol.relay_choice import (
    RelayCandidate,
    RelayPolicy,
    RelayTier,
    choose_relays,
    relay_tier,
)
from tests.conftest import counter_rng

POLICY = RelayPolicy(good_standing_ms=60_000, good_standing_exchanges=5, relays_tried=2)


def candidate(
    peer: str, *, home: bool = False, ms: int = 0, exchanges: int = 0, points: int = 0
) -> RelayCandidate:
    return RelayCandidate(
        peer=peer, co_member_home=home, connected_ms=ms, exchanges=exchanges, points=points
    )


def test_a_grinded_id_that_sorts_first_loses_to_a_contacts_home() -> None:
    grinded = candidate("12D3KooW1111111111")  # sorts before everything
    strangers = [candidate(f"12D3KooWz{i}") for i in range(5)]
    home = candidate("12D3KooWzzzzzzzzzz", home=True)
    for n in range(20):
        chosen = choose_relays([grinded, *strangers, home], POLICY, counter_rng(f"r{n}"))
        assert chosen[0] == home.peer


def test_long_good_standing_beats_new_peers_and_points_undo_it() -> None:
    veteran = candidate("v", ms=60_000, exchanges=5)
    assert relay_tier(veteran, POLICY) is RelayTier.GOOD_STANDING
    assert relay_tier(candidate("v", ms=59_999, exchanges=5), POLICY) is RelayTier.STRANGER
    assert relay_tier(candidate("v", ms=60_000, exchanges=4), POLICY) is RelayTier.STRANGER
    assert relay_tier(candidate("v", ms=60_000, exchanges=5, points=1), POLICY) is (
        RelayTier.STRANGER
    )
    newcomers = [candidate(f"a{i}") for i in range(6)]
    assert choose_relays([*newcomers, veteran], POLICY, counter_rng())[0] == "v"


def test_equals_are_picked_at_random_and_only_as_many_as_tried() -> None:
    peers = [candidate(f"p{i}", home=True) for i in range(4)]
    firsts = Counter(choose_relays(peers, POLICY, counter_rng(f"x{n}"))[0] for n in range(200))
    assert set(firsts) == {"p0", "p1", "p2", "p3"}
    assert len(choose_relays(peers, POLICY, counter_rng())) == 2
    assert choose_relays([], POLICY, counter_rng()) == []
