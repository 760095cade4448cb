"""Peer ids of Ed25519 node keys (SPEC §10.1), cross-checked against py-libp2p itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.node.p2p.host import peer_id_from_seed
from hearthmesh.protocol.errors import InvalidIdentifier
from hearthmesh.protocol.identity import keypair_from_seed
from hearthmesh.protocol.peer_id import node_key_of_peer_id, peer_id_of_node_key


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(key: bytes) -> None:
    assert node_key_of_peer_id(peer_id_of_node_key(key)) == key


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), b"\xff" * 32])
def test_matches_libp2p(seed: bytes) -> None:
    assert peer_id_of_node_key(keypair_from_seed(seed).public) == peer_id_from_seed(seed)


@pytest.mark.parametrize("text", ["", "0OIl", "Qm" + "1" * 44, "1" * 100])
def test_other_forms_are_invalid(text: str) -> None:
    with pytest.raises(InvalidIdentifier):
        node_key_of_peer_id(text)


def test_a_keys_peer_id_is_worked_out_once() -> None:
    key = keypair_from_seed(b"\x07" * 32).public
    first = peer_id_of_node_key(key)
    assert peer_id_of_node_key(bytes(bytearray(key))) is first  # the same text, not redone
    with pytest.raises(InvalidIdentifier):
        peer_id_of_node_key(key[:31])
