"""Gossipsub's scorer without weights (node/p2p/unweighted_scorer.py, SPEC §14.3): py-libp2p's
answers, none of its per-peer work."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from hearthmesh.node.p2p.gossip_router import MeshRouter
from hearthmesh.node.p2p.unweighted_scorer import UnweightedScorer, unweighted

TOPIC = "hearthmesh/test/scores"
OTHER = "hearthmesh/test/other"


def _peers(count: int) -> list[ID]:
    return [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(count)]


def _misbehave(scorer: PeerScorer, peers: list[ID]) -> None:
    """Each peer a different history: meshes, deliveries, invalid messages, every penalty."""
    for n, peer in enumerate(peers):
        scorer.add_peer_ip(peer, "127.0.0.1")
        for _ in range(n):
            scorer.on_join_mesh(peer, TOPIC)
            scorer.on_first_delivery(peer, TOPIC)
            scorer.on_mesh_delivery(peer, TOPIC)
            scorer.on_invalid_message(peer, OTHER)
            scorer.penalize_behavior(peer)
            scorer.penalize_graft_flood(peer)
            scorer.penalize_iwant_spam(peer)
            scorer.penalize_ihave_spam(peer)
            scorer.penalize_equivocation(peer)
        scorer.on_heartbeat()


def _answers(scorer: PeerScorer, peers: list[ID]) -> list[object]:
    topic_sets: list[list[str]] = [[], [TOPIC], [TOPIC, OTHER]]
    return [
        (
            scorer.score(peer, topics),
            scorer.allow_publish(peer, topics),
            scorer.allow_gossip(peer, topics),
            scorer.allow_px_from(peer, topics),
            scorer.is_graylisted(peer, topics),
        )
        for peer in peers
        for topics in topic_sets
    ]


def test_every_answer_is_py_libp2ps_under_our_params_and_nothing_is_counted() -> None:
    """Twelve peers with 0-11 of every scored event, on one IP (loopback: past py-libp2p's
    colocation threshold of 10): py-libp2p's scorer and ours answer every score and gate
    alike (all 0, every gate open but for no topics), and ours holds no counter to decay
    but the peers' IPs, which the grafting for IP diversity reads."""
    params = ScoreParams()
    assert unweighted(params)
    peers = _peers(12)
    theirs, ours = PeerScorer(params), UnweightedScorer(params)
    _misbehave(theirs, peers)
    _misbehave(ours, peers)
    assert _answers(ours, peers) == _answers(theirs, peers)
    assert {a[0] for a in _answers(ours, peers)} == {0.0}  # type: ignore[index]
    counted = (
        ours.time_in_mesh,
        ours.first_message_deliveries,
        ours.mesh_message_deliveries,
        ours.invalid_messages,
        ours.behavior_penalty,
        ours.graft_flood_penalties,
        ours.iwant_spam_penalties,
        ours.ihave_spam_penalties,
        ours.equivocation_penalties,
    )
    assert [len(c) for c in counted] == [0] * len(counted)
    assert ours.ip_by_peer == dict.fromkeys(peers, "127.0.0.1")


@pytest.mark.parametrize(
    "params",
    [
        ScoreParams(p1_time_in_mesh=TopicScoreParams(weight=1.0, cap=10.0)),
        ScoreParams(p5_behavior_penalty_weight=-1.0),
        ScoreParams(graylist_threshold=-10.0),
        ScoreParams(app_specific_score_fn=lambda _peer: 1.0),
    ],
)
def test_params_with_a_weight_or_a_threshold_keep_py_libp2ps_scorer(params: ScoreParams) -> None:
    assert not unweighted(params)
    with pytest.raises(ValueError, match="PeerScorer"):
        UnweightedScorer(params)
    router = MeshRouter(
        protocols=[PROTOCOL_ID_V11], degree=6, degree_low=4, degree_high=8, score_params=params
    )
    assert type(router.scorer) is PeerScorer
    assert ScoreParams().publish_threshold == -math.inf  # what `unweighted` relies on


@contextmanager
def _router(peers: list[ID]) -> Iterator[MeshRouter]:
    """A real router and pubsub, not running, with `peers` subscribed to TOPIC."""
    router = MeshRouter(
        protocols=[PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=8,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(new_host(key_pair=create_new_key_pair()), router)
    try:
        pubsub.peer_topics[TOPIC] = set(peers)
        router.peer_protocol.update(dict.fromkeys(peers, PROTOCOL_ID_V11))
        yield router
    finally:
        pubsub.seen_messages.stop()  # its sweeper thread


def test_our_routers_heartbeat_scores_no_peer_and_its_mesh_stays() -> None:
    """A router as `GossipLayer` builds it (no score params) among 49 peers, a mesh of 8: its
    scorer is the unweighted one, and the heartbeat's mesh "quality" step (py-libp2p's: score
    every peer of the topic to replace a mesh peer by one scoring 0.1 more) scores nobody and
    changes no mesh, as it could not with every score 0."""
    peers = _peers(49)
    with _router(peers) as router:
        assert isinstance(router.scorer, UnweightedScorer)
        router.mesh[TOPIC] = set(peers[:8])
        scored: list[ID] = []
        score = router.scorer.score

        def counted(peer: ID, topics: list[str]) -> float:
            scored.append(peer)
            return score(peer, topics)

        router.scorer.score = counted  # type: ignore[method-assign]
        asyncio.run(router._maintain_mesh_quality(TOPIC))
        assert (scored, router.mesh[TOPIC]) == ([], set(peers[:8]))
