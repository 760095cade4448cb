"""When a node's routing-table refreshes run: the first at once, later ones spread (SPEC §20.6)."""

from __future__ import annotations

import random

from hearthmesh.node.p2p.dht import REFRESH_SPREAD_S, RefreshSpread


def test_the_first_refresh_runs_at_once_and_each_later_one_after_its_own_wait() -> None:
    """Nodes started together refreshed together every 600 s (50 of them within 7 s in a
    scale run); each later refresh now waits a time drawn anew, up to `REFRESH_SPREAD_S`."""
    spread = RefreshSpread(random.Random(1))
    assert spread.next_wait() == 0.0
    waits = [spread.next_wait() for _ in range(200)]
    assert all(0.0 <= w <= REFRESH_SPREAD_S for w in waits), waits
    assert len(set(waits)) == len(waits)  # drawn anew each time
    assert min(waits) < REFRESH_SPREAD_S / 4 < REFRESH_SPREAD_S * 3 / 4 < max(waits)


def test_two_nodes_started_together_refresh_apart() -> None:
    """Each node draws its own waits (its own generator), so their second refreshes part."""
    first, second = RefreshSpread(), RefreshSpread()
    assert first.next_wait() == second.next_wait() == 0.0
    apart = [abs(first.next_wait() - second.next_wait()) for _ in range(20)]
    assert max(apart) > 1.0, apart
