"""Delivery across the connection manager's closes (SPEC §10.17, §11.5): a connection it closes
mid-traffic is redialled by the outbox, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio

import pytest
from libp2p.peer.id import ID

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.connection_trim import CLOSED_IDLE

from .conftest import NodeFactory, acks_of, collect

pytestmark = pytest.mark.integration

MESSAGES = 60


async def close_as_idle(node: Node, peer: str) -> int:
    """Close `node`'s connections to `peer` the way the manager closes an idle one (marked
    `idle`, closed under a bound); how many there were."""
    host = node._host

    async def close() -> int:
        conns = host._require_host().get_network().get_connections(ID.from_base58(peer))
        for conn in conns:
            await host._close_trimmed(conn, CLOSED_IDLE)
        return len(conns)

    return await host._bridge.run(close)


async def test_a_connection_closed_mid_traffic_loses_and_doubles_nothing(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(60), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        bob_events, alice_events = bob.events(), alice.events()
        receiving = asyncio.create_task(collect(bob_events, MessageReceived, MESSAGES))
        closes = 0
        sent = []
        for i in range(MESSAGES):
            sent.append(await alice.send(room, f"hello {i}".encode()))
            if i % 10 == 5:  # while the earlier sends are in flight
                closes += await close_as_idle(alice, bob.peer_id)
        received = await receiving
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        assert {e.recipient for e in await acks_of(alice_events, sent)} == {bob.user_id}
        page = await bob.history(room, limit=2 * MESSAGES)
        assert [e.envelope.body for e in page.events] == [e.body for e in sent]
        assert closes >= 5
        assert alice.connections_closed().get(CLOSED_IDLE, 0) >= 5
