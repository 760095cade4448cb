"""Test helper: the gossip streams a real host opens, wrapped (a held or stalled write)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

from hearthmesh.node.p2p.host import P2PHost


def wrap_pubsub_streams(host: P2PHost, wrap: Callable[[Any], Any]) -> None:
    """Every gossip stream `host` opens from now on is `wrap(stream)` (on its trio thread)."""
    pubsub = host._gossip._pubsub
    assert pubsub is not None
    open_stream = pubsub.host.new_stream

    async def wrapped(peer_id: ID, protocols: Sequence[Any]) -> Any:
        stream = await open_stream(peer_id, protocols)
        return wrap(stream) if PROTOCOL_ID_V11 in protocols else stream

    pubsub.host.new_stream = wrapped  # type: ignore[method-assign,assignment]


def gossip_streams_on_their_connection(a: P2PHost, b: P2PHost) -> bool:
    """`a` and `b` have one connection each to the other, and each one's gossip stream to the
    other is on it (one on a connection that closed while another was up is moved there by a
    greeting again, SPEC §14.3)."""
    return _gossip_stream_on_its_connection(a, b) and _gossip_stream_on_its_connection(b, a)


def _gossip_stream_on_its_connection(host: P2PHost, peer: P2PHost) -> bool:
    pubsub = host._gossip._pubsub
    assert pubsub is not None
    peer_id = ID.from_base58(peer.peer_id)
    stream = pubsub.peers.get(peer_id)
    connections = pubsub.host.get_network().get_connections(peer_id)
    return stream is not None and [c.muxed_conn for c in connections] == [stream.muxed_conn]
