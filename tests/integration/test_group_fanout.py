"""Fan-out in a group: one delivery per member home, one relay hop for all absent members
(SPEC §11.2.3, §11.5.2, §11.7).

Alice owns a group of 40 members: bob, carol and dave on their own real nodes (they joined by
invite), and 36 users whose homes are away (no record anywhere). Each message she sends is
delivered once to each real member's home, and what the absent members are owed goes to a
relay in a few hops per message, together carrying every absent member's copy: not one hop per
member.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from contextlib import AsyncExitStack

import pytest

from hearthmesh.node.events import DeliveredToHome
from hearthmesh.protocol.identity import UserId

from .conftest import NodeFactory, collect, wait_until

pytestmark = pytest.mark.integration

ABSENT = 36
MESSAGES = 4


async def test_a_group_message_is_one_delivery_per_home_and_one_relay_hop_for_the_absent(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(150), AsyncExitStack() as stack:
        alice = await stack.enter_async_context(make_node("alice"))
        real = [await stack.enter_async_context(make_node(name)) for name in ("b", "c", "d")]
        group = await alice.create_group("hearth", [])
        for member in real:
            link, _ = await alice.groups.create_invite(group)
            await member.groups.join_by_invite(link)
        for _ in range(ABSENT):
            await alice.add_member(group, UserId(os.urandom(32)))
        assert len(await alice.members(group)) == 1 + len(real) + ABSENT
        hops = alice._services.outbox.relay_hops
        await wait_until(lambda: len(alice.unreachable()[0]) == ABSENT and not hops.busy)

        homes = {member.user_id: member.peer_id for member in real}
        hops_before, items_before = hops.hops, hops.items
        events = alice.events()
        sent = [await alice.send(group, f"to all {n}".encode()) for n in range(MESSAGES)]
        ids = {envelope.message_id for envelope in sent}
        delivered = await collect(
            events, DeliveredToHome, MESSAGES * len(real), lambda e: e.message_id in ids
        )
        await wait_until(lambda: hops.items - items_before >= MESSAGES * ABSENT)
        await wait_until(lambda: not hops.busy)

    # one delivery per (message, real member), each to that member's home node
    assert Counter((e.message_id, e.recipient) for e in delivered) == Counter(
        {(message_id, user): 1 for message_id in ids for user in homes}
    )
    assert all(e.peer_id == homes[e.recipient] for e in delivered)
    # every absent member's copy went to a relay, in a few hops per message (not 36 each)
    assert hops.items - items_before >= MESSAGES * ABSENT
    assert hops.hops - hops_before <= 3 * MESSAGES
