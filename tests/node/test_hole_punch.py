"""The hole punch schedule (node/p2p/hole_punch.py, SPEC §10.9): a punch that failed is made
again, backed off, while the peer is reached through relays alone; the plain dial before a
punch has its own bound. On trio's mock clock: the pauses are the subject, and no test waits
them out."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from types import SimpleNamespace
from typing import cast

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr  # type: ignore[import-untyped]
from trio.testing import MockClock

from hearthmesh.node.p2p.hole_punch import (
    DIRECT_DIAL_TIMEOUT_S,
    PUNCH_RETRY_AFTER_S,
    PUNCH_WINDOW_S,
    _BoundedDCUtR,
    punch_until_direct,
)


def punches_made(outcomes: list[bool], relayed_only: Callable[[float], bool]) -> list[float]:
    """When `punch_until_direct` punched (mock seconds from the start), each punch taking its
    whole window and going direct as `outcomes` say; `relayed_only(now)` is the path check."""
    times: list[float] = []
    left = iter(outcomes)
    clock = MockClock(autojump_threshold=0)
    start = clock.current_time()

    async def punch() -> bool:
        times.append(clock.current_time() - start)
        await trio.sleep(PUNCH_WINDOW_S)
        return next(left)

    async def still_relayed() -> bool:
        return relayed_only(clock.current_time() - start)

    trio.run(punch_until_direct, punch, still_relayed, clock=clock)
    return times


def test_a_failed_punch_is_made_again_after_each_pause_until_one_goes_direct() -> None:
    first, second = PUNCH_RETRY_AFTER_S[:2]
    window = PUNCH_WINDOW_S
    times = punches_made([False, False, True], relayed_only=lambda _: True)
    assert times == [0.0, window + first, 2 * window + first + second]


def test_punches_stop_after_the_last_pause_however_many_failed() -> None:
    times = punches_made([False] * 10, relayed_only=lambda _: True)
    assert len(times) == 1 + len(PUNCH_RETRY_AFTER_S)
    pauses = [later - earlier - PUNCH_WINDOW_S for earlier, later in pairwise(times)]
    assert pauses == list(PUNCH_RETRY_AFTER_S)
    assert pauses == sorted(pauses)  # backed off


def test_no_punch_once_the_peer_is_no_longer_reached_through_relays_alone() -> None:
    # A direct connection came (the other end's dial, a late one of ours), or the relayed
    # connection closed, during the first pause.
    gone_at = PUNCH_WINDOW_S + 1.0
    times = punches_made([False] * 10, relayed_only=lambda now: now < gone_at)
    assert times == [0.0]
    assert punches_made([True], relayed_only=lambda _: False) == []


class _UnansweredDials(_BoundedDCUtR):
    """A DCUtR whose dials are never answered (SYNs a NAT drops)."""

    async def _dial_peer(
        self,
        peer_id: ID,
        addr: Multiaddr,
        source: tuple[str, int] | None = None,
        as_responder: bool = False,
    ) -> None:
        await trio.sleep_forever()


def test_the_plain_dial_before_a_punch_gives_up_at_its_own_bound() -> None:
    """The peer's direct addresses (behind its NAT) never answer: the plain dial before the
    punch ends at `unilateral_dial_s`, not at the punch dials' `DIRECT_DIAL_TIMEOUT_S` (every
    punch in the NAT lab waited those 2 s out)."""
    peer = ID(b"\x00\x24" + bytes(36))
    address = Multiaddr("/ip4/192.168.2.2/tcp/4470")
    host = SimpleNamespace(
        get_peerstore=lambda: SimpleNamespace(addrs=lambda _peer: [address]),
        get_network=lambda: SimpleNamespace(connections={}),
    )
    bound_s = 0.5
    dcutr = _UnansweredDials(cast(IHost, host), lambda _t, _d: None, unilateral_dial_s=bound_s)
    clock = MockClock(autojump_threshold=0)

    async def timed() -> tuple[bool, float]:
        start = trio.current_time()
        went = await dcutr._try_unilateral_upgrade(peer)
        return went, trio.current_time() - start

    went, took_s = trio.run(timed, clock=clock)
    assert not went
    assert took_s == bound_s < DIRECT_DIAL_TIMEOUT_S
