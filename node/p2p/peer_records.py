"""A gossip peer's signed peer record, checked once while it stays the same, and ours sent once
per stream while it stays the same (SPEC §14.3).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). py-libp2p
0.8.1 attaches the sender's signed peer record to every pubsub RPC, and checks the one it
receives on every RPC: the read loop (`Pubsub.continuously_read_stream`) and then the router
again for any RPC with control messages (`GossipSub.handle_rpc`), each an envelope parse and an
Ed25519 verification (330 µs measured at load 8) and a rewrite of the peer's addresses in the
peerstore. A peer sends the same record until its addresses change, so every gossip message,
duplicate, IHAVE, GRAFT and PRUNE paid it once or twice.

`install()` puts `consume_once` in place of py-libp2p's `maybe_consume_signed_record` in the
two modules that call it (a module attribute each, looked up at call time). A record whose
bytes are the ones last accepted from that peer, while the peerstore still holds the envelope
that accepting stored, is taken as it is; anything else (a new record, another peer's, one the
peerstore replaced, expired or dropped) goes through py-libp2p's check unchanged, and a record
that fails it is never remembered.

`RecordsTold` is the sending half: py-libp2p puts our record (some 210 bytes) in every RPC it
writes, a quarter of a node's gossip bytes in a scale run, and a share that grew with the mesh,
since the IHAVEs a node sends grow with its peers outside the mesh (10 nodes: 1.8 KiB per
message per node, 25 nodes: 3.1 KiB; SPEC §20.6). A peer needs it once, and again only when
it changes, so each pubsub stream carries it in its first RPC and then only when it differs
from the last one that stream carried; a new stream (a new connection) carries it again.

State: per host, the last accepted record of at most `MAX_PEERS` peers, least recently seen
forgotten first, and the record last written on each pubsub stream (forgotten with the
stream); each host's is touched only by its own trio thread.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.abc import IHost, INetStream
from libp2p.peer.envelope import Envelope
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.pubsub.utils import maybe_consume_signed_record

__all__ = ["MAX_PEERS", "RecordsTold", "consume_once", "consume_record_once", "install"]

MAX_PEERS: Final = 1024
"""Peers whose accepted record one host remembers."""

_Accepted = OrderedDict[ID, tuple[bytes, Envelope]]

_accepted: weakref.WeakKeyDictionary[IHost, _Accepted] = weakref.WeakKeyDictionary()
_accepted_lock = threading.Lock()  # hosts of one process (tests) run on several trio threads


def _accepted_of(host: IHost) -> _Accepted:
    with _accepted_lock:
        accepted = _accepted.get(host)
        if accepted is None:
            accepted = _accepted[host] = OrderedDict()
        return accepted


def consume_once(msg: RPC, host: IHost, peer_id: ID) -> bool:
    """`maybe_consume_signed_record` that skips a record already accepted and still held."""
    if not msg.HasField("senderRecord"):
        return True
    return consume_record_once(
        bytes(msg.senderRecord),
        host,
        peer_id,
        lambda: maybe_consume_signed_record(msg, host, peer_id),
    )


def consume_record_once(record: bytes, host: IHost, peer_id: ID, check: Callable[[], bool]) -> bool:
    """`check()` (py-libp2p's, which verifies `record` from `peer_id` and stores it in the
    peerstore) unless `record` is the one last accepted from `peer_id` and still held. The
    kad server's check is the same (node/p2p/dht.py), so a record either accepted is known."""
    accepted = _accepted_of(host)
    known = accepted.get(peer_id)
    if known is not None and known[0] == record and _held(host, peer_id) is known[1]:
        accepted.move_to_end(peer_id)
        return True
    if not check():
        accepted.pop(peer_id, None)
        return False
    envelope = _held(host, peer_id)
    if envelope is not None:
        accepted[peer_id] = (record, envelope)
        accepted.move_to_end(peer_id)
        while len(accepted) > MAX_PEERS:
            accepted.popitem(last=False)
    return True


def _held(host: IHost, peer_id: ID) -> Envelope | None:
    """The record envelope the peerstore holds for `peer_id`, or None. py-libp2p 0.8.1's
    `get_peer_record` raises `PeerStoreError` once the peer's addresses have expired (its own
    clean-up asks for them): raised in the pubsub read loop, that ended the connection's task
    group and the host's whole trio run, and the node, its API still up and acking sends,
    delivered nothing until restarted (R1, seed 7: 55 s, until the next kill -9)."""
    try:
        return host.get_peerstore().get_peer_record(peer_id)
    except PeerStoreError:
        return None


def install() -> None:
    """Use `consume_once` in py-libp2p's pubsub and gossipsub modules (idempotent)."""
    _pubsub_module.maybe_consume_signed_record = consume_once  # type: ignore[attr-defined]
    _gossipsub_module.maybe_consume_signed_record = consume_once  # type: ignore[attr-defined]


class RecordsTold:
    """Which record of ours each pubsub stream has carried (one per host, trio thread)."""

    def __init__(self) -> None:
        self._told: weakref.WeakKeyDictionary[INetStream, bytes] = weakref.WeakKeyDictionary()

    def trimmed(self, stream: INetStream, rpc: RPC) -> RPC:
        """`rpc` as it is, or, when `stream` carried its record already, a copy without it
        (the same RPC object goes to many peers: it is never changed)."""
        if not rpc.HasField("senderRecord"):
            return rpc
        record = bytes(rpc.senderRecord)
        if self._told.get(stream) != record:
            self._told[stream] = record
            return rpc
        trimmed = RPC()
        trimmed.CopyFrom(rpc)
        trimmed.ClearField("senderRecord")
        return trimmed
