"""A ROOM_KEY goes by the guaranteed path only, never on the room's gossip topic (SPEC §14.1):
its body carries a share per member device, so gossip copied a body that grows with the group
to every node about as many times as the mesh degree."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.gossip import load_gossip, room_topic

from .conftest import NodeFactory
from .test_gap_fetch import next_messages

pytestmark = pytest.mark.integration


async def test_room_keys_are_not_gossiped_and_the_members_still_read_everything(
    make_node: NodeFactory,
) -> None:
    async with (
        asyncio.timeout(60),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
        make_node("eve") as eve,
    ):
        for node in (bob, carol, eve):
            await node.connect(alice.listen_addrs[0])
        for node in (bob, carol):
            await alice.learn_home_record(node.home_record())
        room = await alice.create_group("keys", [bob.user_id, carol.user_id])
        topic = await eve._host.subscribe(room_topic(room))  # a listener on the topic
        heard: list[Kind] = []

        async def hear_a_message() -> None:
            while True:
                kind = load_gossip((await topic.get()).data).envelope.kind
                heard.append(kind)
                if kind is Kind.MESSAGE:
                    return

        carol_gets = asyncio.create_task(next_messages(carol.events(), 1))
        listening = asyncio.create_task(hear_a_message())
        while not listening.done():  # until the topic's mesh reaches eve
            await alice.send(room, b"hello")
            await asyncio.wait([listening], timeout=0.3)
        # a member leaves: the next send starts a session and shares it in a ROOM_KEY (§27.9)
        await carol_gets  # carol's home holds the group
        await carol.leave(room)
        while carol.user_id in await alice.members(room):  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.02)
        bob_gets = asyncio.create_task(next_messages(bob.events(), 1))
        listening = asyncio.create_task(hear_a_message())
        await alice.send(room, b"after carol left")
        assert [m.body for m in await bob_gets] == [b"after carol left"]  # its key came
        await listening  # the message after the ROOM_KEY came by gossip
        await topic.unsubscribe()
    assert Kind.MESSAGE in heard
    assert Kind.ROOM_KEY not in heard
