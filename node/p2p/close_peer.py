"""Closing a peer's connections without forgetting one it made meanwhile (SPEC §11.5.2).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). py-libp2p
0.8.1's `Swarm.close_peer` closes each connection it lists for the peer, then drops the peer's
whole entry from `Swarm.connections`. Each close already takes its own connection out
(`SwarmConn._cleanup` → `Swarm.remove_conn`), so that last step only drops connections added
while the closes ran: one the peer dialled, or one our own `new_stream` dialled because the
closing connection had just been taken out (a gossip greeting, an outbox batch). Such a
connection stays open but listed nowhere: the host no longer counts the peer as connected, no
later disconnect or ban finds it, and its peer, which lists it, keeps using it.
`close_peer_keeping_newer` puts in its place, on the swarm instance, a close that takes out
only the connections it closed.

State: none of its own; the swarm's connection table, touched only by the host's trio thread.
"""

from __future__ import annotations

import logging

from libp2p.abc import INetConn
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

__all__ = ["close_peer_keeping_newer"]

log = logging.getLogger(__name__)


def close_peer_keeping_newer(swarm: Swarm) -> None:
    """Make `swarm.close_peer` forget only the connections it closed."""

    async def close_peer(peer_id: ID) -> None:
        closed = swarm.get_connections(peer_id)
        for connection in closed:
            try:
                swarm.cleanup_connection_health(peer_id, connection)
                await connection.close()
            except Exception as exc:  # one failed close must not keep the others open
                log.warning("closing a connection to %s failed: %r", peer_id, exc)
        _forget(swarm, peer_id, closed)

    swarm.close_peer = close_peer  # type: ignore[method-assign]


def _forget(swarm: Swarm, peer_id: ID, closed: list[INetConn]) -> None:
    """Take `closed` out of the peer's entry (a close that failed before its own clean-up left
    it there), keeping any connection added since."""
    kept = [conn for conn in swarm.connections.get(peer_id, []) if conn not in closed]
    if kept:
        swarm.connections[peer_id] = kept
    else:
        swarm.connections.pop(peer_id, None)
