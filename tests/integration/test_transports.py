"""Guaranteed delivery over one transport alone (SPEC §10.1, §11): nodes that listen on QUIC
only chat, and every message is stored and acked as over TCP."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.node.events import MessageReceived

from .conftest import NodeFactory, acks_of, collect

pytestmark = pytest.mark.integration

QUIC_ONLY = ("/ip4/127.0.0.1/udp/0/quic-v1",)


async def test_a_chat_over_quic_only_delivers_and_acks_every_message(
    make_node: NodeFactory,
) -> None:
    async with (
        asyncio.timeout(15),
        make_node("alice", listen_addrs=QUIC_ONLY) as alice,
        make_node("bob", listen_addrs=QUIC_ONLY) as bob,
    ):
        assert all("/udp/" in a and "/quic-v1/" in a for a in alice.listen_addrs + bob.listen_addrs)
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        received = asyncio.create_task(collect(bob.events(), MessageReceived, 10))
        acked = alice.events()
        sent = [await alice.send(room, f"over quic {i}".encode()) for i in range(10)]
        assert [e.envelope.message_id for e in await received] == [e.message_id for e in sent]
        assert {e.recipient for e in await acks_of(acked, sent)} == {bob.user_id}
        back = asyncio.create_task(collect(alice.events(), MessageReceived, 1))
        reply = await bob.send(room, b"and back")
        assert (await back)[0].envelope.message_id == reply.message_id
