"""A room's session key shared ahead of its sender's next message (SPEC §27.10.3), with real
homes on 127.0.0.1: once a group forms, each member's home holds alice's key before she sends,
so her first message carries no key and is read on arrival, with no key request; after a member
leaves, alice's next session goes to the members left before she sends, and never to the leaver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol.e2ee import AheadPolicy
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.identity import UserId

from .conftest import NodeFactory, wait_until, wait_until_async
from .test_e2ee_canary import direct_room, session_of
from .test_gap_fetch import next_messages
from .test_room_key_addressing import _devices, _recipients, _room_keys

pytestmark = pytest.mark.integration

QUICK = AheadPolicy(quiet_ms=300, spread_ms=300)
"""The plan's rules with shorter waits: what goes ahead is the subject here, not when."""


@contextlib.asynccontextmanager
async def _group(make_node: NodeFactory) -> AsyncIterator[tuple[Node, Node, Node, RoomId]]:
    """alice's group with bob and carol, their homes connected and records known."""
    async with (
        asyncio.timeout(60),
        make_node("alice", key_ahead=QUICK) as alice,
        make_node("bob", key_ahead=QUICK) as bob,
        make_node("carol", key_ahead=QUICK) as carol,
    ):
        for node in (bob, carol):
            await node.connect(alice.listen_addrs[0])
            await alice.learn_home_record(node.home_record())
        await carol.connect(bob.listen_addrs[0])
        yield alice, bob, carol, await alice.create_group("ahead", [bob.user_id, carol.user_id])


async def _read_by(sender: Node, room: RoomId, body: bytes, *readers: Node) -> Envelope:
    """`sender` sends `body`; returns it once each of `readers` was shown it."""
    gets = [asyncio.create_task(next_messages(reader.events(), 1)) for reader in readers]
    await asyncio.sleep(0)
    sent = await sender.send(room, body)
    for got in gets:
        assert [m.body for m in await got] == [body]
    return sent


def _keys_from(node: Node, room: RoomId, sender: Node) -> Callable[[], Awaitable[int]]:
    """How many ROOM_KEY envelopes of `sender` `node` stores in `room` (a probe)."""

    async def count() -> int:
        return len(await _room_keys(node, room, sender.user_id))

    return count


async def test_a_first_message_is_read_on_arrival_with_the_key_shared_ahead(
    make_node: NodeFactory,
) -> None:
    async with _group(make_node) as (alice, bob, carol, room):
        for member in (bob, carol):  # alice's key reaches them with no message of hers
            await wait_until_async(_keys_from(member, room, alice), 1)
        shared = len(await _room_keys(alice, room, alice.user_id))
        await _read_by(alice, room, b"first", bob, carol)
        assert len(await _room_keys(alice, room, alice.user_id)) == shared  # it carried none
        assert bob.key_requests_taken == carol.key_requests_taken == 0
        assert alice.key_requests_answered == 0


async def test_nothing_is_shared_ahead_in_a_direct_room(make_node: NodeFactory) -> None:
    """A direct room's messages are not gossiped (SPEC §14.1): the first goes with its key in
    one delivery, so sharing ahead would add a delivery and win nothing."""
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        room = await direct_room(alice, bob)
        assert await alice._services.outgoing.share_ahead(room) == 0
        assert await _room_keys(alice, room, alice.user_id) == []


async def test_after_a_member_leaves_the_next_key_goes_ahead_to_the_others_alone(
    make_node: NodeFactory,
) -> None:
    async with _group(make_node) as (alice, bob, carol, room):
        first = await _read_by(alice, room, b"before", bob, carol)
        on_bob = len(await _room_keys(bob, room, alice.user_id))
        on_carol = len(await _room_keys(carol, room, alice.user_id))
        before = len(await _room_keys(alice, room, alice.user_id))

        await carol.leave(room)
        while carol.user_id in await alice.members(room):  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.02)
        # alice's session rotates ahead (SPEC §27.9): its key reaches bob before she sends
        await wait_until_async(_keys_from(bob, room, alice), on_bob + 1)
        shared = len(await _room_keys(alice, room, alice.user_id))
        later = await _read_by(alice, room, b"after carol left", bob)
        assert session_of(later) != session_of(first)
        since = (await _room_keys(alice, room, alice.user_id))[before:]
        assert _recipients(since) == _devices(bob)  # never a share for carol's device
        store = carol.store  # and her home holds no key of alice's since
        assert await store.read(store.store.inbound_session, room, session_of(later)) is None
        assert len(await _room_keys(carol, room, alice.user_id)) == on_carol
        assert len(await _room_keys(alice, room, alice.user_id)) == shared  # it carried none
        assert bob.key_requests_taken == 0


SETTLE = AheadPolicy(quiet_ms=2_000, max_wait_ms=60_000, spread_ms=0)
ADDS, ADD_GAP_S = 5, 0.5
"""A formation: an add every 0.5 s for 2.5 s, longer than a fixed wait of `quiet_ms` from the
first change, each gap well inside it."""


async def test_a_formation_is_shared_ahead_once_its_changes_are_quiet(
    make_node: NodeFactory,
) -> None:
    """bob's home sees alice's group form over 2.5 s: it shares once the adds have been quiet
    for 2 s, one round for all of them, not one while they still come (SPEC §27.10.3)."""
    async with (
        asyncio.timeout(60),
        make_node("alice") as alice,
        make_node("bob", key_ahead=SETTLE) as bob,
    ):
        await bob.connect(alice.listen_addrs[0])
        await alice.learn_home_record(bob.home_record())
        room = await alice.create_group("forming", [bob.user_id])
        await wait_until(lambda: bob.key_ahead.due_ms(room) is not None)  # bob holds the create
        for n in range(ADDS):
            await asyncio.sleep(ADD_GAP_S)  # the pace of a formation, not a wait for a state
            await alice.add_members(room, [UserId(bytes([n + 1]) * 32)])
        await wait_until(lambda: len(_members_held(bob, room)) == 2 + ADDS)
        # a round is counted as it starts: wait for its shares, not for its count alone
        await wait_until(lambda: bob.key_ahead.shares > 0 and bob.key_ahead.due_ms(room) is None)
        assert bob.key_ahead.rounds == 1
        assert bob.key_ahead.shares == 1  # alice's device, once


def _members_held(node: Node, room: RoomId) -> set[UserId]:
    """The members of `room` as `node` holds them in memory."""
    state = node._services.rooms.view(room)
    return set() if state is None else set(state.members)
