"""What a late joiner is owed before its ADD (SPEC §8.6), on real nodes with the default gap grace.

A member ADDed later is given the group's MEMBERSHIP events and the shared window (SPEC §30.6),
and then everything sent to it. Nothing else of a sender's numbers before its ADD is owed: its
release order waits for none of them and its gap fetcher stores none of them. Each test waits
until a message sent after the ADD reaches the joiner's app, which on main came only once the
gap fetcher (past its 1.5 s grace) had filled the numbers before the ADD with messages the
joiner was never meant to hold; then it checks that nothing is held back, so nothing more is
ever fetched (the fetcher asks only about gaps that hold an envelope back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.node.events import MessageReceived, NodeEvent
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId

from .conftest import NodeFactory
from .test_groups import (
    _alice_admin_bob_and_carol,
    _readable,
    _through,
    held_back,
    wait_until_readable,
)

pytestmark = pytest.mark.integration


async def _released(events: AsyncIterator[NodeEvent], body: bytes) -> Envelope:
    """The first MESSAGE released to the app that opens to `body`."""
    async for event in events:
        if isinstance(event, MessageReceived) and event.envelope.kind is Kind.MESSAGE:
            content = content_of(event.envelope)
            if content is not None and content.body == body:
                return event.envelope
    raise AssertionError("the event stream ended")


async def _shown_with_nothing_owed_before(
    sender: Node, joiner: Node, room: RoomId, body: bytes, *, not_owed: Envelope
) -> None:
    """`sender` writes `body` after the joiner's ADD: it reaches the joiner's app, nothing is
    left waiting on a number before the ADD (so nothing more is fetched), and `not_owed` (sent
    before the ADD, not shared) is not held there, nor anything it cannot read."""
    releasing = asyncio.create_task(_released(joiner.events(), body))
    await sender.send(room, body)
    await releasing
    assert held_back(joiner) == 0, "nothing waits on a number before the ADD"
    assert await joiner.get_event(not_owed.message_id) is None, "not owed: never stored"
    assert await _unreadable(joiner, room) == []


async def _unreadable(node: Node, room: RoomId) -> list[Envelope]:
    page = await node.history(room, limit=200)
    return [
        e.envelope
        for e in page.events
        if e.envelope.kind is Kind.MESSAGE and content_of(e.envelope) is None
    ]


async def test_a_late_joiner_waits_for_and_fetches_no_unshared_message_from_before_its_add(
    make_node: NodeFactory,
) -> None:
    """Alice's last event before carol's ADD is a message the group does not share ("first":
    the window of 1 is bob's word), after her membership events: carol learns only from the
    fetch that it is from before her ADD. She must not store it, and "after", sent after her
    ADD, must reach her app all the same."""
    async with (
        asyncio.timeout(90),
        _alice_admin_bob_and_carol(make_node) as (alice, bob, carol, group),
    ):
        await alice.groups.set_history(group, "shared", 1)
        link, _ = await alice.groups.create_invite(group)
        first = await alice.send(group, b"first")
        await bob.send(group, b"bob's word")
        await wait_until_readable(bob, group, [b"first", b"bob's word"])
        assert await carol.groups.join_by_invite(_through(link, bob)) == group
        await wait_until_readable(carol, group, [b"bob's word"])  # the shared window
        await alice.learn_home_record(carol.home_record())  # as a lookup would find it
        await _shown_with_nothing_owed_before(alice, carol, group, b"after", not_owed=first)
        assert await _readable(carol, group) == [b"bob's word", b"after"]


async def test_a_rejoined_member_is_owed_nothing_sent_while_it_was_away(
    make_node: NodeFactory,
) -> None:
    """Carol, a member from the group's start, leaves; alice writes "while away"; alice ADDs
    carol again and writes "back". Carol's release order stood at alice's number before "while
    away": it must not wait for it nor fetch it, and "back" reaches her app at once."""
    async with (
        asyncio.timeout(90),
        _alice_admin_bob_and_carol(make_node) as (alice, bob, carol, group),
    ):
        await carol.connect(alice.listen_addrs[0])
        await alice.learn_home_record(carol.home_record())
        await alice.add_member(group, carol.user_id)
        await alice.send(group, b"hello carol")
        await wait_until_readable(carol, group, [b"hello carol"])
        await carol.leave(group)
        while carol.user_id in await alice.members(group):  # noqa: ASYNC110 - a fold
            await asyncio.sleep(0.02)
        away = await alice.send(group, b"while away")
        await wait_until_readable(bob, group, [b"hello carol", b"while away"])
        await alice.add_member(group, carol.user_id)
        await _shown_with_nothing_owed_before(alice, carol, group, b"back", not_owed=away)
