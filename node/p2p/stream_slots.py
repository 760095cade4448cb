"""The swarm's inbound stream slots, bounded per peer (SPEC §10.4), on the trio thread.

Every inbound stream takes one of the swarm's stream slots before its protocol is negotiated,
and libp2p's own protocols keep theirs for as long as the peer likes (ping echoes for ever).
py-libp2p 0.8.1's resource manager bounds the slots of all peers together only (10,000 by
default), so one stranger holding ping streams could take every slot, after which no peer's
stream is accepted. `PerPeerStreamSlots` adds the missing bound: past
`InboundPolicy.max_libp2p_streams_per_peer` the swarm resets a peer's new stream before
negotiation (`SwarmConn._handle_muxed_stream`). Our own protocols are also capped, more tightly,
after negotiation (`InboundLedger`).

State owned: the inbound slot count per peer, guarded by the manager's own lock (the trio
thread changes it; `inbound_of` may be read from asyncio).
"""

from __future__ import annotations

from collections.abc import Callable

from libp2p.rcmgr import Direction, ResourceLimits, ResourceManager

from hearthmesh.protocol.inbound import InboundPolicy

__all__ = ["PerPeerStreamSlots"]


class PerPeerStreamSlots(ResourceManager):
    """libp2p's resource manager with a bound on each peer's inbound streams."""

    def __init__(self, policy: InboundPolicy, excess: Callable[[str], None]) -> None:
        """`excess(peer)` is called (on the trio thread) for each stream refused because its
        peer holds all its slots: the peer's own excess, for its standing."""
        super().__init__(
            limits=ResourceLimits(max_streams=policy.max_libp2p_streams), enable_metrics=False
        )
        self._per_peer = policy.max_libp2p_streams_per_peer
        self._excess = excess
        self._inbound: dict[str, int] = {}

    def acquire_stream(self, peer_id: str, direction: Direction) -> bool:
        with self._lock:
            held = self._inbound.get(peer_id, 0)
            over = direction == Direction.INBOUND and held >= self._per_peer
            if not over:
                if not super().acquire_stream(peer_id, direction):
                    return False
                if direction == Direction.INBOUND:
                    self._inbound[peer_id] = held + 1
                return True
        self._excess(peer_id)
        return False

    def release_stream(self, peer_id: str, direction: Direction) -> None:
        with self._lock:
            super().release_stream(peer_id, direction)
            if direction != Direction.INBOUND:
                return
            held = self._inbound.get(peer_id, 0)
            if held <= 1:
                self._inbound.pop(peer_id, None)  # a peer with no stream costs no memory
            else:
                self._inbound[peer_id] = held - 1

    def inbound_of(self, peer_id: str) -> int:
        """Inbound streams of `peer_id` holding a slot now."""
        return self._inbound.get(peer_id, 0)
