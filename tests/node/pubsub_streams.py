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
