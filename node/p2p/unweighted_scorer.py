"""Gossipsub's peer scorer when no score weights are given: every peer scores 0 and passes every
gate, so none of py-libp2p's per-peer counting, decay and scoring is done (SPEC §14.3).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`).
`MeshRouter` puts an `UnweightedScorer` in place of py-libp2p's `PeerScorer`; it runs on the
trio thread with the router.

We give gossipsub no score parameters (`GossipLayer.build`), and py-libp2p 0.8.1's defaults weigh
every counter and penalty 0 and set every threshold to -inf: every peer scores 0 and every gate
opens, whatever the peer did (a misbehaving peer is charged by the node's own budgets, SPEC
§11.6). py-libp2p still counted each delivery and penalty per peer and topic, decayed every
counter of every peer each heartbeat, and computed scores that could not differ: two per mesh
peer per forwarded message, and each heartbeat one per peer of each topic in its mesh
"quality" step (which replaces a mesh peer only by one scoring 0.1 more: never). At 50 peers
that was 0.2-0.4 ms of decay and ~100 scores of ~6 µs a heartbeat, a node's work growing with
its peers with nothing sent (SPEC §20.6). The IPs of peers are still kept: the router's grafting
for IP diversity reads them (`MeshRouter._improve_mesh_diversity`).
"""

from __future__ import annotations

import math

from libp2p.peer.id import ID
from libp2p.pubsub.score import PeerScorer, ScoreParams

__all__ = ["UnweightedScorer", "unweighted"]


def unweighted(params: ScoreParams) -> bool:
    """Every score under `params` is 0 and every gate opens: no weights, no thresholds."""
    topic_weights = (
        params.p1_time_in_mesh.weight,
        params.p2_first_message_deliveries.weight,
        params.p3_mesh_message_deliveries.weight,
        params.p4_invalid_messages.weight,
    )
    weights = (
        *topic_weights,
        params.p5_behavior_penalty_weight,
        params.p6_appl_slack_weight,
        params.p7_ip_colocation_weight,
    )
    thresholds = (
        params.publish_threshold,
        params.gossip_threshold,
        params.graylist_threshold,
        params.accept_px_threshold,
    )
    return (
        all(w == 0 for w in weights)
        and params.app_specific_score_fn is None
        and all(t == -math.inf for t in thresholds)
    )


class UnweightedScorer(PeerScorer):
    """`PeerScorer`'s answers under unweighted params, without its counters (see the module).
    A gate asked about no topics stays shut, as py-libp2p's."""

    def __init__(self, params: ScoreParams) -> None:
        if not unweighted(params):
            raise ValueError("score params with weights or thresholds need PeerScorer")
        super().__init__(params)

    def score(self, peer: ID, topics: list[str]) -> float:
        return 0.0

    def topic_score(self, peer: ID, topic: str) -> float:
        return 0.0

    def allow_publish(self, peer: ID, topics: list[str]) -> bool:
        return bool(topics)

    def allow_gossip(self, peer: ID, topics: list[str]) -> bool:
        return bool(topics)

    def allow_px_from(self, peer: ID, topics: list[str]) -> bool:
        return bool(topics)

    def is_graylisted(self, peer: ID, topics: list[str]) -> bool:
        return False

    def on_heartbeat(self, dt_seconds: float = 1.0) -> None:
        """Nothing to decay: nothing is counted."""

    def on_join_mesh(self, peer: ID, topic: str) -> None:
        pass

    def on_first_delivery(self, peer: ID, topic: str) -> None:
        pass

    def on_mesh_delivery(self, peer: ID, topic: str) -> None:
        pass

    def on_invalid_message(self, peer: ID, topic: str) -> None:
        pass

    def penalize_behavior(self, peer: ID, amount: float = 1.0) -> None:
        pass

    def penalize_graft_flood(self, peer: ID, amount: float = 10.0) -> None:
        pass

    def penalize_iwant_spam(self, peer: ID, amount: float = 5.0) -> None:
        pass

    def penalize_ihave_spam(self, peer: ID, amount: float = 5.0) -> None:
        pass

    def penalize_equivocation(self, peer: ID, amount: float = 100.0) -> None:
        pass
