"""Key claims over `/hearthmesh/keys/0` between real libp2p hosts on loopback (SPEC §27.2.2):
a one-time key is handed out once, keys verify as the device's, and bad claims are refused
with their codes and charged."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import vodozemac

from hearthmesh.node.e2ee.key_claims import CLAIMS_BURST, claim_keys
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.envelope import RoomId, decode_envelope
from hearthmesh.protocol.errors import ErrorCode, NotFound, RateLimited
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


@asynccontextmanager
async def a_session_and_a_stranger(
    make_node: NodeFactory,
) -> AsyncIterator[tuple[Node, Node, P2PHost, RoomId, bytes]]:
    """(alice, bob, mallory, room, session): alice's Megolm session of her direct room with bob,
    and mallory, a bare libp2p host connected to alice (charged under CATALOGUE_STANDING)."""
    async with (
        make_node("alice", standing=CATALOGUE_STANDING) as alice,
        make_node("bob") as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        sent = await alice.send(room, b"only for bob")
        session = e2ee.decode_encrypted_body(decode_envelope(sent.wire).body).session_id
        await mallory.connect(alice.listen_addrs[0])
        yield alice, bob, mallory, room, session


async def test_room_keys_are_forwarded_to_our_own_homes_only(make_node: NodeFactory) -> None:
    """SPEC §27.12.1: a stranger asking for room keys gets NOT_AUTHORIZED, well formed or not
    (who asks is checked first), and is charged; nothing is forwarded."""
    async with (
        asyncio.timeout(20),
        a_session_and_a_stranger(make_node) as (alice, _bob, mallory, room, session),
    ):
        for request, code in [
            (e2ee.encode_forward_request([(room, session)]), ErrorCode.NOT_AUTHORIZED),
            (b"\x82\x01\x80", ErrorCode.NOT_AUTHORIZED),  # [1, []]: malformed too
        ]:
            async with await mallory.open_stream(alice.peer_id, e2ee.KEY_FORWARD_PROTOCOL) as s:
                await s.write_frame(request)
                answer = e2ee.decode_forward_answer(await s.read_frame())
            assert isinstance(answer, ProtocolErrorFrame) and answer.code == code
        assert alice.peer_points(mallory.peer_id) > 0
