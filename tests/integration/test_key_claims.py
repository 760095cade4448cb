"""Key claims over `/hearthmesh/keys/0` between real libp2p hosts on loopback (SPEC §27.2.2):
a one-time key is handed out once, keys verify as the device's, and bad claims are refused
with their codes and charged."""

from __future__ import annotations

import asyncio
import os

import pytest
import vodozemac

from hearthmesh.node.e2ee.key_claims import CLAIMS_BURST, claim_keys
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.errors import NotFound, RateLimited
from hearthmesh.protocol.identity import DeviceId

from .conftest import CATALOGUE_STANDING, NodeFactory

pytestmark = pytest.mark.integration


async def test_claims_hand_out_distinct_keys_signed_by_the_device(make_node: NodeFactory) -> None:
    async with (
        asyncio.timeout(20),
        make_node("alice") as alice,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as bob,
    ):
        await bob.connect(alice.listen_addrs[0])
        device = alice.keyring.device_id
        first_bundle, first = await claim_keys(bob, alice.peer_id, device)
        second_bundle, second = await claim_keys(bob, alice.peer_id, device)
        assert first is not None and second is not None and first.key != second.key
        assert first_bundle.identity_key == second_bundle.identity_key
        assert first_bundle.device == device
        # the claimed key really opens an Olm session to alice's account
        session = vodozemac.Account().create_outbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(first_bundle.identity_key),
            vodozemac.Curve25519PublicKey.from_bytes(first.key),
        )
        assert session.session_id


async def test_a_claim_for_another_device_or_too_fast_is_refused(make_node: NodeFactory) -> None:
    async with (
        asyncio.timeout(20),
        make_node("alice", standing=CATALOGUE_STANDING) as alice,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await mallory.connect(alice.listen_addrs[0])
        with pytest.raises(NotFound):
            await claim_keys(mallory, alice.peer_id, DeviceId(b"x" * 32))
        with pytest.raises(RateLimited):  # a loaded machine refills a token now and then
            for _ in range(5 * CLAIMS_BURST):
                await claim_keys(mallory, alice.peer_id, alice.keyring.device_id)
