"""Guaranteed delivery between real nodes on 127.0.0.1 (DESIGN §5, SPEC §11)."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.node.events import DeliveredToHome, MessageReceived

from .conftest import NodeFactory, collect

pytestmark = pytest.mark.integration


async def test_two_nodes_exactly_once_in_order(make_node: NodeFactory) -> None:
    async with asyncio.timeout(20), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        bob_events = bob.events()
        alice_events = alice.events()
        receiving = asyncio.create_task(collect(bob_events, MessageReceived, 30))
        acked = asyncio.create_task(collect(alice_events, DeliveredToHome, 30))
        sent = [await alice.send(room, f"hello {i}".encode()) for i in range(30)]
        received = await receiving
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        assert {e.message_id for e in await acked} == {e.message_id for e in sent}
        page = await bob.history(room, limit=100)
        assert [e.envelope.body for e in page.events] == [e.body for e in sent]
