"""The standing keeper of a node (SPEC §11.6): charges, one log line per ban, gossip refusals."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.gossip import GossipMessage
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import (
    BadSignature,
    ClockSkew,
    ErrorCode,
    MalformedMessage,
    TooLarge,
)
from hearthmesh.protocol.prefixes import PrefixPolicy
from hearthmesh.protocol.standing import StandingPolicy
from tests.conftest import FakeClock

OWN, HOME, MALLORY, HONEST = "own", "home", "mallory", "honest"
ON = "/hearthmesh/test/0"
"""The protocol the refusals in these tests came on."""


def keeper(
    clock: FakeClock,
    disconnected: list[str],
    *,
    policy: StandingPolicy | None = None,
    prefix_policy: PrefixPolicy | None = None,
) -> PeerStanding:
    return PeerStanding(
        clock=clock,
        own_peer=OWN,
        protected=lambda peer: peer == HOME,
        disconnect=disconnected.append,
        policy=policy,
        prefix_policy=prefix_policy,
    )


def ban_by_sybils(standing: PeerStanding, network: str = "203.0.113") -> None:
    """Three identities from `network`.0/24, each banned at its first bad frame (with
    `StandingPolicy(ban_points=25)`): the third bans the prefix."""
    for n in range(3):
        assert standing.connected(f"sybil{n}", f"{network}.{20 + n}")
        standing.refused(f"sybil{n}", MalformedMessage("garbage"), protocol=ON)


async def test_a_flood_bans_once_logs_once_and_touches_no_one_else(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    disconnected: list[str] = []
    standing = keeper(clock, disconnected)
    garbage = MalformedMessage("garbage")
    with caplog.at_level(logging.DEBUG, logger="hearthmesh.node.mesh.standing"):
        standing.refused(HONEST, garbage, protocol=ON)
        for _ in range(1000):
            standing.refused(MALLORY, garbage, protocol=ON)
            standing.refused(HOME, garbage, protocol=ON)  # our own home: never banned
            standing.refused(OWN, garbage, protocol=ON)
    bans = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(bans) == 1 and MALLORY in bans[0].getMessage()
    assert disconnected == [MALLORY]
    assert not standing.admits(MALLORY)
    assert standing.admits(HONEST) and standing.admits(HOME) and standing.admits(OWN)
    clock.advance(standing.policy.ban_ms)
    assert standing.admits(MALLORY)


async def test_deferred_results_cost_nothing_and_rejected_forgeries_do(clock: FakeClock) -> None:
    standing = keeper(clock, [])
    mid = MessageId(bytes(32))
    deferred = [
        DeliveryResult(message_id=mid, status=AckStatus.DEFERRED, code=int(code))
        for code in (ErrorCode.CLOCK_SKEW, ErrorCode.NOT_AUTHORIZED)
    ]
    standing.refused_results(MALLORY, deferred, protocol=ON)
    standing.refused(MALLORY, ClockSkew("ahead"), protocol=ON)
    assert standing.points(MALLORY) == 0
    forged = DeliveryResult(
        message_id=mid, status=AckStatus.REJECTED, code=int(ErrorCode.BAD_SIGNATURE)
    )
    standing.refused_results(MALLORY, [forged, forged], protocol=ON)
    assert standing.points(MALLORY) == 2 * standing.policy.item_points


async def test_a_batch_over_a_relay_bound_costs_once(clock: FakeClock) -> None:
    """SPEC §11.5.3: envelopes refused over a relay bound cost the batch `quota_points` once."""
    standing = keeper(clock, [])
    over = DeliveryResult(
        message_id=MessageId(bytes(32)),
        status=AckStatus.DEFERRED,
        code=int(ErrorCode.QUOTA_EXCEEDED),
    )
    standing.refused_results(MALLORY, [over] * 200, protocol=ON)
    assert standing.points(MALLORY) == standing.policy.quota_points
    batches = standing.policy.ban_points // standing.policy.quota_points
    for _ in range(batches):
        standing.refused_results(MALLORY, [over], protocol=ON)
    assert not standing.admits(MALLORY)


async def test_gossip_refusals_are_charged_to_the_forwarder(clock: FakeClock) -> None:
    standing = keeper(clock, [])

    def check(message: GossipMessage) -> None:
        if message.data == b"forged":
            raise BadSignature("forged")
        if message.data == b"skewed":
            raise ClockSkew("ahead")

    validate = standing.gossip_validator(check, topic=ON)

    def message(data: bytes, forwarder: str) -> GossipMessage:
        return GossipMessage(
            topic="t", origin="o", data=data, msg_id=b"", seqno=1, forwarder=forwarder
        )

    results = await asyncio.to_thread(  # validators run on the libp2p thread
        lambda: [
            validate(message(b"fine", MALLORY)),
            validate(message(b"forged", MALLORY)),
            validate(message(b"skewed", MALLORY)),
            validate(message(b"forged", "")),  # our own publish: no forwarder
        ]
    )
    assert results == [True, False, False, False]
    # The charges hopped back to the loop before the thread's result did (FIFO).
    assert standing.points(MALLORY) == standing.policy.item_points


async def test_banned_identities_of_one_prefix_ban_it_and_its_other_peers_go(
    clock: FakeClock,
) -> None:
    """SPEC §11.6.5 in the node's keeper: the third banned id of a /24 bans the /24, which
    disconnects its other peers and refuses new ones; another prefix and our home stay."""
    disconnected: list[str] = []
    standing = keeper(
        clock,
        disconnected,
        policy=StandingPolicy(ban_points=25),
        prefix_policy=PrefixPolicy(prefix_ban_identities=3),
    )
    assert standing.connected(HOME, "203.0.113.9")
    assert standing.connected("bystander", "203.0.113.10")
    assert standing.connected(HONEST, "198.51.100.1")
    assert standing.connected("on-loopback", "127.0.0.1")  # exempt by default
    ban_by_sybils(standing)
    assert standing.prefix_bans == 1
    assert disconnected == ["sybil0", "sybil1", "sybil2", "bystander"]
    assert not standing.admits("bystander")
    assert not standing.connected("fresh", "203.0.113.99")
    assert not standing.admits("fresh")
    standing.disconnected("fresh")
    assert standing.admits(HONEST) and standing.admits(HOME) and standing.admits("on-loopback")


async def test_a_vouched_correspondent_outlasts_its_prefixs_ban(clock: FakeClock) -> None:
    """SPEC §11.6.5: a peer with enough good exchanges and no points is not cut off when its
    prefix is banned; a peer of that prefix with fewer, or with points, is."""
    disconnected: list[str] = []
    standing = keeper(
        clock,
        disconnected,
        policy=StandingPolicy(ban_points=25),
        prefix_policy=PrefixPolicy(prefix_ban_identities=3, vouched_exchanges=4),
    )
    for peer, exchanges in (("correspondent", 4), ("newcomer", 3), ("charged", 4)):
        assert standing.connected(peer, f"203.0.113.{len(peer)}")
        for _ in range(exchanges):
            standing.exchanged(peer)
    standing.refused("charged", MalformedMessage("one bad frame"), whole_frame=False, protocol=ON)
    ban_by_sybils(standing)
    assert standing.prefix_bans == 1
    assert "correspondent" not in disconnected
    assert {"newcomer", "charged"} <= set(disconnected)
    assert standing.admits("correspondent")
    assert not standing.admits("newcomer") and not standing.admits("charged")


async def test_relay_facts_are_connected_time_and_good_exchanges(clock: FakeClock) -> None:
    standing = keeper(clock, [])
    standing.connected(HONEST, "198.51.100.1")
    clock.advance(5000)
    standing.exchanged(HONEST)
    standing.refused_results(HONEST, [], protocol=ON)  # a batch with nothing to charge
    standing.exchanged("never-connected")
    fact = standing.relay_candidate(HONEST, co_member_home=False)
    assert (fact.connected_ms, fact.exchanges, fact.points) == (5000, 2, 0)
    assert standing.relay_candidate("never-connected", co_member_home=True).exchanges == 0
    standing.disconnected(HONEST)
    assert standing.relay_candidate(HONEST, co_member_home=False).connected_ms == 0


async def test_charges_are_counted_by_protocol_and_what_costs_nothing_is_not(
    clock: FakeClock,
) -> None:
    """SPEC §11.6.7: the status's count of charges by protocol counts each refusal that cost
    points, under the protocol it came on; a refusal that costs nothing, and one of our own
    home or our own node, counts nowhere."""
    standing = keeper(clock, [])
    standing.refused(MALLORY, MalformedMessage("garbage"), protocol=ON)
    standing.charger("/hearthmesh/other/0")(MALLORY, MalformedMessage("garbage"))
    standing.refused(MALLORY, ClockSkew("ahead"), protocol=ON)  # costs nothing
    standing.refused(HOME, MalformedMessage("garbage"), protocol=ON)  # our own home
    standing.refused(OWN, MalformedMessage("garbage"), protocol=ON)  # ourselves
    standing.answer_charger("/hearthmesh/asked/0")(MALLORY, MalformedMessage("no answer"))
    standing.refused_item(HONEST, TooLarge("one item"), protocol=ON)
    assert standing.charged_by_protocol == {
        ON: 2,
        "/hearthmesh/other/0": 1,
        "/hearthmesh/asked/0": 1,
    }
