"""Which form of a revised event reaches whom (SPEC §20.7): the revised one only when every
home it would reach advertised it; what peers advertised is kept, bounded."""

from __future__ import annotations

from typing import cast

from hearthmesh.node.mesh.capabilities import (
    MAX_PEERS_KNOWN,
    OUR_LEVELS,
    PeerLevels,
    Revisions,
)
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.identity import UserId

US, ALICE, BOB = (UserId(bytes([n]) * 32) for n in (1, 2, 3))
HOMES = {US: ("us-1", "us-2"), ALICE: ("alice-1", "alice-2"), BOB: ("bob-1",)}
OLDER = frozenset({Level.CORE, Level.IM, Level.MULTI_DEVICE, Level.RELAY, Level.E2EE})
"""What a node of the release before the revisions (dd84a23) advertises."""


def _revisions(levels: PeerLevels) -> Revisions:
    return Revisions(
        levels=levels,
        user=US,
        homes_of=lambda user: HOMES.get(user, ()),
        siblings=lambda: frozenset({"us-2"}),
    )


def _levels() -> PeerLevels:
    """Nothing is asked here: every home the tests name was answered already (a host that is
    not there would fail any ask)."""
    return PeerLevels(host=cast(P2PHost, None), on_refused=lambda peer, exc: None)


async def test_the_revised_form_only_when_every_home_and_sibling_advertised_it() -> None:
    levels = _levels()
    for peer in ("us-2", "alice-1", "alice-2", "bob-1"):
        levels.remember(peer, OUR_LEVELS)
    revisions = _revisions(levels)
    assert await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert await revisions.speak({US, ALICE, BOB}, Level.ADD_SEVERAL)  # our own home not asked
    levels.remember("alice-2", OLDER)  # one of alice's two homes is older
    assert not await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert await revisions.speak({BOB}, Level.ADDRESSED_RECEIPTS)
    levels.remember("us-2", OLDER)  # our own other home gets everything we send
    assert not await revisions.speak({BOB}, Level.ADDRESSED_RECEIPTS)


async def test_a_user_whose_homes_we_do_not_know_gets_the_form_before() -> None:
    levels = _levels()
    levels.remember("us-2", OUR_LEVELS)
    stranger = UserId(b"\x09" * 32)
    assert not await _revisions(levels).speak({stranger}, Level.ADD_SEVERAL)


def test_what_peers_advertised_is_bounded_and_the_oldest_answer_goes_first() -> None:
    levels = _levels()
    for n in range(MAX_PEERS_KNOWN + 1):
        levels.remember(f"peer-{n}", OUR_LEVELS)
    assert levels.of("peer-0") is None
    assert levels.of(f"peer-{MAX_PEERS_KNOWN}") == OUR_LEVELS
    assert levels.of("peer-1") == OUR_LEVELS
