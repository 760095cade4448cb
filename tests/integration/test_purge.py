"""The purge service runs with the node (SPEC §11.5.4): relay TTL and history retention."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from hearthmesh.node.libp2p_host import HostConfig, P2PHost
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    AckStatus,
    BatchItem,
    decode_frame,
    encode_deliver,
)
from hearthmesh.protocol.envelope import Kind, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.protocol.rooms import direct_room_id

from .conftest import NodeFactory

pytestmark = pytest.mark.integration


async def test_a_running_node_drops_expired_relay_entries_and_old_history(
    make_node: NodeFactory,
) -> None:
    """Before, nothing called `Store.purge`: relayed envelopes and history stayed forever."""
    async with (
        asyncio.timeout(10),
        make_node(
            "bob",
            relay_ttl_ms=500,
            history_retention_ms=24 * 3600 * 1000,
            purge_interval_ms=50,
        ) as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await mallory.connect(bob.listen_addrs[0])
        user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
        cert = encode_certificate(issue_certificate(user, DeviceId(device.public), created_ms=0))
        sender = UserId(user.public)
        away = UserId(hashlib.sha256(b"someone away").digest())

        def message(to: UserId, wall_ms: int) -> bytes:
            return seal(
                device,
                kind=Kind.MESSAGE,
                room=direct_room_id(sender, to),
                sender_user=sender,
                seq=1,
                hlc=Timestamp(wall_ms=wall_ms, counter=0),
                content_type="text/plain",
                body=b"hi",
            ).wire

        # one for bob, stamped two days ago; one held for a user who lives elsewhere
        old = message(bob.user_id, 1_000)
        held = message(away, 2_000)
        stream = await mallory.open_stream(bob.peer_id, DELIVER_PROTOCOL)
        items = [BatchItem(0, bob.user_id, old), BatchItem(0, away, held)]
        await stream.write_frame(encode_deliver(1, [cert], items))
        ack = decode_frame(await stream.read_frame())
        assert isinstance(ack, Ack)
        assert [r.status for r in ack.results] == [AckStatus.STORED, AckStatus.RELAYED]
        old_id = ack.results[0].message_id
        store = bob.store
        while await bob.get_event(old_id) is not None:  # noqa: ASYNC110 - store state, no event
            await asyncio.sleep(0.02)
        while await store.run(store.store.relay_recipients):  # noqa: ASYNC110 - likewise
            await asyncio.sleep(0.02)
