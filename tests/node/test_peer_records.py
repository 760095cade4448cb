"""A gossip peer's signed peer record checked once while unchanged (node/p2p/peer_records.py),
with real py-libp2p records, envelopes and peerstores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import multiaddr  # type: ignore[import-untyped]
import pytest
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub import utils as pubsub_utils
from libp2p.pubsub.pb.rpc_pb2 import RPC

from hearthmesh.node.p2p import peer_records
from hearthmesh.node.p2p.peer_records import consume_once


def _rpc(signer: KeyPair, seq: int, claims: KeyPair | None = None, port: int = 4001) -> RPC:
    """An RPC carrying a peer record of `claims` (default: the signer) sealed by `signer`."""
    peer = ID.from_pubkey((claims or signer).public_key)
    record = PeerRecord(peer, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], seq)
    return RPC(senderRecord=seal_record(record, signer.private_key).marshal_envelope())


def _peer() -> tuple[KeyPair, ID]:
    keys = create_new_key_pair()
    return keys, ID.from_pubkey(keys.public_key)


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The envelopes py-libp2p parsed and verified (its `consume_envelope`), in order."""
    seen: list[bytes] = []
    real: Callable[..., Any] = pubsub_utils.consume_envelope  # type: ignore[attr-defined]

    def counting(data: bytes, domain: str) -> Any:
        seen.append(bytes(data))
        return real(data, domain)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    yield seen


@pytest.fixture
def host() -> IHost:
    return new_host(key_pair=create_new_key_pair())


def test_the_same_record_is_verified_once_and_a_new_one_again(
    host: IHost, verified: list[bytes]
) -> None:
    peer_keys, peer = _peer()
    first = _rpc(peer_keys, seq=1)
    for _ in range(50):  # a gossip message, its duplicates, IHAVEs, GRAFTs ...
        assert consume_once(first, host, peer)
    assert verified == [first.senderRecord]
    moved = _rpc(peer_keys, seq=2, port=4002)
    assert consume_once(moved, host, peer) and consume_once(moved, host, peer)
    assert verified == [first.senderRecord, moved.senderRecord]
    assert host.get_peerstore().addrs(peer) == [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4002")]
    assert consume_once(RPC(), host, peer)  # no record: nothing to check
    assert len(verified) == 2


def test_bad_records_are_refused_every_time_and_never_remembered(
    host: IHost, verified: list[bytes]
) -> None:
    (peer_keys, peer), other_keys = _peer(), create_new_key_pair()
    someone_elses = _rpc(other_keys, seq=1)  # valid, but not the sender's
    forged = _rpc(other_keys, seq=1, claims=peer_keys)  # claims the sender, signed by another
    for rpc in (someone_elses, forged, someone_elses, forged):
        assert not consume_once(rpc, host, peer)
    assert len(verified) == 4
    good = _rpc(peer_keys, seq=5)
    assert consume_once(good, host, peer)
    older = _rpc(peer_keys, seq=4)  # the peerstore keeps the newest: refused as py-libp2p does
    assert not consume_once(older, host, peer) and not consume_once(older, host, peer)
    assert consume_once(good, host, peer)  # checked again: a refusal forgets the peer's
    assert verified == [someone_elses.senderRecord, forged.senderRecord] * 2 + [
        good.senderRecord,
        older.senderRecord,
        older.senderRecord,
        good.senderRecord,
    ]


def test_a_record_the_peerstore_no_longer_holds_is_checked_again(
    host: IHost, verified: list[bytes]
) -> None:
    peer_keys, peer = _peer()
    rpc = _rpc(peer_keys, seq=1)
    assert consume_once(rpc, host, peer)
    peerstore = host.get_peerstore()
    assert isinstance(peerstore, PeerStore)
    peerstore.peer_record_map.pop(peer)  # as its expiry or a clear would
    assert consume_once(rpc, host, peer)
    assert len(verified) == 2
    assert host.get_peerstore().get_peer_record(peer) is not None


def test_a_record_whose_addresses_expired_is_checked_again_not_raised(
    host: IHost, verified: list[bytes]
) -> None:
    """py-libp2p 0.8.1's `get_peer_record` raises `PeerStoreError` once the peer's addresses
    expired; raised in the pubsub read loop, it ended the host's trio run (R1, seed 7: a node
    delivered nothing for 55 s, until its next kill -9)."""
    peer_keys, peer = _peer()
    rpc = _rpc(peer_keys, seq=1)
    assert consume_once(rpc, host, peer)
    peerstore = host.get_peerstore()
    assert isinstance(peerstore, PeerStore)
    data = peerstore.peer_data_map[peer]
    data.ttl, data.last_identified = 1, 0  # its addresses' time to live ran out long ago
    assert consume_once(rpc, host, peer)
    assert len(verified) == 2
    assert host.get_peerstore().get_peer_record(peer) is not None


def test_each_host_remembers_a_bounded_number_of_peers(
    host: IHost, verified: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_records, "MAX_PEERS", 3)
    keys = [create_new_key_pair() for _ in range(4)]
    rpcs = [_rpc(k, seq=1) for k in keys]
    peers = [ID.from_pubkey(k.public_key) for k in keys]
    for rpc, peer in zip(rpcs, peers, strict=True):
        assert consume_once(rpc, host, peer)
    assert consume_once(rpcs[3], host, peers[3])  # remembered
    assert len(verified) == 4
    assert consume_once(rpcs[0], host, peers[0])  # the least recently seen was forgotten
    assert len(verified) == 5
    other = new_host(key_pair=create_new_key_pair())  # another host remembers on its own
    assert consume_once(rpcs[3], other, peers[3])
    assert len(verified) == 6
