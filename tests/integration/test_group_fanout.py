"""Fan-out in a group: one delivery per member home, and a marker, not an entry per message,
for each member whose home no record names (SPEC §11.2.3, §11.5.2, §11.7).

Alice owns a group of 41 members: bob, carol and dave on their own real nodes (they joined by
invite), 36 users whose homes are away (no record anywhere), and a late member whose node runs
but whom no one has met yet. Each message she sends is delivered once to each real member's
home; what the absent members are owed is one marker each, which costs no relay copy and no
outbox entry per message; and when the late member's home connects, it gets every message it
is owed, in order, and reads them (the key owed to it, SPEC §27.10.1).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from contextlib import AsyncExitStack

import pytest

from hearthmesh.node.events import DeliveredToHome
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Direction

from .conftest import NodeFactory, collect, wait_until
from .test_devices import wait_until_readable

pytestmark = pytest.mark.integration

ABSENT = 36
MESSAGES = 4


async def test_a_group_message_is_one_delivery_per_home_and_a_marker_for_the_absent(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(150), AsyncExitStack() as stack:
        alice = await stack.enter_async_context(make_node("alice"))
        real = [await stack.enter_async_context(make_node(name)) for name in ("b", "c", "d")]
        late = await stack.enter_async_context(make_node("late"))
        group = await alice.create_group("hearth", [])
        for member in real:
            link, _ = await alice.groups.create_invite(group)
            await member.groups.join_by_invite(link)
        absent = [UserId(os.urandom(32)) for _ in range(ABSENT)]
        await alice.add_members(group, [*absent, late.user_id])
        assert len(await alice.members(group)) == 1 + len(real) + ABSENT + 1
        outbox = alice._services.outbox
        hops = outbox.relay_hops
        away = [*absent, late.user_id]
        await wait_until(lambda: all(outbox.absent(user) for user in away) and not hops.busy)

        homes = {member.user_id: member.peer_id for member in real}

        async def held_for_away() -> list[int]:
            """What the relays (the real members' homes) hold for each absent member: the
            welcomes alice relayed before they counted as absent."""
            return [await node.relay_held(user) for node in real for user in away]

        held_before = await held_for_away()
        events = alice.events()
        sent = [await alice.send(group, f"to all {n}".encode()) for n in range(MESSAGES)]
        ids = {envelope.message_id for envelope in sent}
        delivered = await collect(
            events, DeliveredToHome, MESSAGES * len(real), lambda e: e.message_id in ids
        )
        store = alice.store
        markers = {u: await store.read(store.store.absent_markers, u) for u in away}
        await wait_until(lambda: not hops.busy)  # a hop under way has landed
        held_after = await held_for_away()

        # the late member's home connects: its record comes with the hello, and what it is
        # owed (its welcome's entries, then the markers' envelopes) follows in order
        await late.connect(alice.listen_addrs[0])

        async def late_has_all() -> bool:
            page = await late.history(group, direction=Direction.FORWARD, limit=200)
            return ids <= {e.envelope.message_id for e in page.events}

        while not await late_has_all():  # noqa: ASYNC110 - a store read, no event to wait on
            await asyncio.sleep(0.05)
        # alice's sends owed it the key (a crowd she holds no record of: none waited for,
        # SPEC §27.10.1): its home asks her for it and opens them
        await wait_until_readable(late, group)
        page = await late.history(group, direction=Direction.FORWARD, limit=200)
        await wait_until(lambda: not outbox.absent(late.user_id))

    # one delivery per (message, real member), each to that member's home node
    assert Counter((e.message_id, e.recipient) for e in delivered) == Counter(
        {(message_id, user): 1 for message_id in ids for user in homes}
    )
    assert all(e.peer_id == homes[e.recipient] for e in delivered)
    # the absent members' copies: no relay holds one more, one marker each covering every
    # message. (A real member's batch whose direct attempt fails under load is handed to a
    # relay, SPEC §11.5.2, and still delivered to its home: hops are not counted here.)
    assert held_after == held_before
    seqs = sorted(envelope.seq for envelope in sent)
    for user in away:
        assert any(first <= seqs[0] and seqs[-1] <= last for _, _, first, last in markers[user]), (
            markers[user]
        )
        assert len(markers[user]) <= 2
    # the late member took alice's events in her order
    from_alice = [
        e.envelope.seq
        for e in page.events
        if e.envelope.sender_user == alice.user_id and e.envelope.kind is Kind.MESSAGE
    ]
    assert from_alice == seqs
    assert {f"to all {n}".encode() for n in range(MESSAGES)} <= {
        e.envelope.body for e in page.events
    }


async def test_a_members_first_message_is_a_marker_when_no_record_names_its_home(
    make_node: NodeFactory,
) -> None:
    """SPEC §11.5.2: a user no record names is absent from the first envelope stored for it:
    the first message alice sends after adding such members is one marker each, and no relay
    gets a copy of it for them (each first send to a group's ~1,000 absent members was ~1,000
    relay copies). On an idle machine their welcome's batch has failed by the time she sends,
    so this holds by the first failure too; under load it did not (SPEC §20.6)."""
    async with asyncio.timeout(60), AsyncExitStack() as stack:
        alice = await stack.enter_async_context(make_node("alice"))
        bob = await stack.enter_async_context(make_node("bob"))
        group = await alice.create_group("hearth", [])
        link, _ = await alice.groups.create_invite(group)
        await bob.groups.join_by_invite(link)
        absent = [UserId(os.urandom(32)) for _ in range(3)]
        await alice.add_members(group, absent)
        events = alice.events()
        first = await alice.send(group, b"first")
        await collect(events, DeliveredToHome, 1, lambda e: e.message_id == first.message_id)
        store = alice.store
        markers = {u: await store.read(store.store.absent_markers, u) for u in absent}
        await wait_until(lambda: not alice._services.outbox.relay_hops.busy)
        relay = bob.store
        held = [
            await relay.read(relay.store.relay_take, user, now_ms=0, limit=100) for user in absent
        ]
    for user in absent:
        assert any(f <= first.seq <= last for _, _, f, last in markers[user]), markers[user]
    # bob holds their welcomes (the group's membership history) for them, not `first`
    assert all(held), held
    assert first.message_id not in {entry.message_id for entries in held for entry in entries}
