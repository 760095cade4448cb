"""Outbox destinations: a user (any one of their home nodes) or one node (our own siblings).

A message for another user needs to reach one of their homes; those homes share it among
themselves. A message for our own user's other homes (siblings, DESIGN §7) names each node.
Node destinations are 33 bytes (`n` + node key), so they never collide with 32-byte user ids.
"""

from __future__ import annotations

from typing import Final

from .identity import KEY_BYTES
from .peer_id import node_key_of_peer_id, peer_id_of_node_key

__all__ = ["destination_peer", "node_destination"]

_NODE: Final = b"n"


def node_destination(peer_id: str) -> bytes:
    """The outbox destination of one node, by its peer id."""
    return _NODE + node_key_of_peer_id(peer_id)


def destination_peer(destination: bytes) -> str | None:
    """The peer id of a node destination; None for a user destination."""
    if len(destination) == 1 + KEY_BYTES and destination.startswith(_NODE):
        return peer_id_of_node_key(destination[1:])
    return None
