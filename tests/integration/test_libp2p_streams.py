"""Every inbound stream is bounded per peer, before protocol negotiation (SPEC §10.4).

Each inbound stream takes one of the swarm's stream slots before its protocol is negotiated,
and py-libp2p gives a stream 30 s to negotiate. Its resource manager bounded the slots of all
peers together only (10,000), so one stranger opening yamux streams that never say a protocol
(400 a second is enough) could hold every slot, and then no one's stream was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from libp2p.peer.id import ID

from hearthmesh.node.events import MessageReceived
from hearthmesh.protocol.inbound import InboundPolicy
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory, collect, wait_until

pytestmark = pytest.mark.integration


async def _open_raw_streams(host: Any, peer: str, count: int) -> int:
    """On the kit's trio thread: open up to `count` yamux streams to `peer` that negotiate
    nothing, until the peer cuts the connection; how many were opened."""
    connection = host.get_network().get_connections(ID.from_base58(peer))[0]
    opened = 0
    with contextlib.suppress(Exception):  # cut off: the victim banned us
        for _ in range(count):
            await connection.muxed_conn.open_stream()
            opened += 1
    return opened


async def test_streams_that_never_negotiate_are_bounded_per_peer_and_others_still_deliver(
    make_node: NodeFactory,
) -> None:
    """Mallory opens 200 streams that never negotiate against bob's 100 slots: bob keeps at
    most 24 of them, charges each one past them until mallory is banned, and alice (already
    connected) and carol (connecting after the attack) deliver."""
    inbound = InboundPolicy(max_libp2p_streams_per_peer=24, max_libp2p_streams=100)
    async with (
        asyncio.timeout(30),
        make_node("alice") as alice,
        make_node("bob", inbound=inbound) as bob,
        make_node("carol") as carol,
        HostilePeer() as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        await mallory.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        kit = mallory.host
        await kit._bridge.run(_open_raw_streams, kit._host, bob.peer_id, 200)
        await wait_until(lambda: bob.is_banned(mallory.peer_id))  # each excess costs points
        assert bob.libp2p_inbound_streams(mallory.peer_id) <= 24
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 3))
        sent = [await alice.send(room, f"honest {i}".encode()) for i in range(3)]
        received = await arriving
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        # a peer that comes later needs new streams (identify, deliver): slots are left
        await carol.connect(bob.listen_addrs[0])
        carols = await carol.open_direct(bob.user_id)
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
        late = await carol.send(carols, b"and me")
        assert [e.envelope.message_id for e in await arriving] == [late.message_id]
        assert bob.libp2p_inbound_streams(mallory.peer_id) <= 24
