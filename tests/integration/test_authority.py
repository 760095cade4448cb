"""Room authority against a stranger (issue 12, findings 1-3; SPEC §12.2, §12.6).

Mallory is a raw libp2p host with a self-made user identity and no relationship with anyone:
whatever MEMBERSHIP envelope she sends, by gossip or by deliver, is refused before it is stored,
costs her points, and leaves the victim's rooms and services as they were.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import NotAuthorized
from hearthmesh.protocol.gossip import room_topic
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.protocol.membership import MEMBERSHIP_CONTENT_TYPE, Action, Role
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory, collect, free_port, wait_until

pytestmark = pytest.mark.integration


async def test_an_oversized_membership_body_on_gossip_leaves_the_node_up(
    make_node: NodeFactory,
) -> None:
    """Finding 1: one gossip message used to end every service of the node. Now the topic
    validator drops it (MEMBERSHIP never travels on gossip) and charges the forwarder."""
    async with (
        asyncio.timeout(10),
        make_node("alice") as alice,
        make_node("bob") as bob,
        HostilePeer() as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        room = await bob.open_direct(alice.user_id)  # bob follows the room's topic
        await alice.open_direct(bob.user_id)
        topic = room_topic(room)
        await mallory.connect(bob.listen_addrs[0])
        assert await mallory.join(topic, bob.peer_id)
        poison = mallory.forge.oversized_membership(room, now_ms=mallory.now_ms())
        assert await mallory.publish(topic, mallory.gossip(poison.wire)) == "published"
        await wait_until(lambda: bob.peer_points(mallory.peer_id) > 0)
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
        sent = await alice.send(room, b"still there?")
        assert [e.envelope.message_id for e in await arriving] == [sent.message_id]
        assert await bob.get_event(poison.message_id) is None
        assert await bob.members(room) == {alice.user_id, bob.user_id}


async def test_an_oversized_membership_body_delivered_is_refused_and_the_group_stays_usable(
    make_node: NodeFactory,
) -> None:
    """Finding 1 by deliver: the body was folded after it was held in memory, and until a
    restart every fold of the group raised (adding a member answered 413). Now it is refused
    TOO_LARGE before it is held or stored, and charged."""
    carol = UserId(keypair_from_seed(os.urandom(32)).public)
    async with asyncio.timeout(10), make_node("bob") as bob, HostilePeer() as mallory:
        group = await bob.create_group("g", [])
        await mallory.connect(bob.listen_addrs[0])
        poison = mallory.forge.oversized_membership(group, now_ms=mallory.now_ms())
        outcome = await mallory.deliver_wires(bob.peer_id, [poison.wire], bob.user_id)
        assert outcome == ["REJECTED:TOO_LARGE"]
        assert bob.peer_points(mallory.peer_id) == StandingPolicy().item_points
        await bob.add_member(group, carol)
        assert await bob.members(group) == {bob.user_id, carol}
        assert await bob.get_event(poison.message_id) is None


async def test_a_strangers_add_of_too_many_users_is_refused_and_charged(
    make_node: NodeFactory,
) -> None:
    """SPEC §12.1.1: an ADD names at most 64 users in at most 2,688 bytes. A stranger's ADD of
    65 is refused MALFORMED and one of 80 TOO_LARGE, each charged and stored nowhere; a
    well-formed ADD of 64 from a non-member is only deferred (§12.5 bounds those); the group
    takes bob's own ADD of 64 afterwards."""
    users = [UserId(os.urandom(32)) for _ in range(80)]
    async with asyncio.timeout(20), make_node("bob") as bob, HostilePeer() as mallory:
        group = await bob.create_group("g", [])
        await mallory.connect(bob.listen_addrs[0])
        now = mallory.now_ms()
        head: list[CborValue] = [int(Action.ADD), users[0], 0, b"", 0, ""]
        too_many = encode_canonical([*head, list(users[1:65])])
        too_big = encode_canonical([*head, list(users[1:80])])
        well_formed = encode_canonical([*head, list(users[1:64])])
        forged = [
            mallory.forge.seal(
                Kind.MEMBERSHIP, group, body, now_ms=now, content_type=MEMBERSHIP_CONTENT_TYPE
            )
            for body in (too_many, too_big, well_formed)
        ]
        outcome = await mallory.deliver_wires(bob.peer_id, [f.wire for f in forged], bob.user_id)
        assert outcome == ["REJECTED:MALFORMED", "REJECTED:TOO_LARGE", "DEFERRED:NOT_AUTHORIZED"]
        assert bob.peer_points(mallory.peer_id) == 2 * StandingPolicy().item_points
        for envelope in forged:
            assert await bob.get_event(envelope.message_id) is None
        assert await bob.members(group) == {bob.user_id}
        await bob.add_members(group, users[:64])
        assert await bob.members(group) == {bob.user_id, *users[:64]}


async def test_a_strangers_leave_changes_nothing_in_a_direct_room_even_after_a_restart(
    make_node: NodeFactory,
) -> None:
    """Finding 2: one LEAVE from a stranger into alice<->bob emptied bob's member list for good.
    Now a direct room takes no MEMBERSHIP event: NOT_AUTHORIZED, stored nowhere, charged."""
    bob_at = (f"/ip4/127.0.0.1/tcp/{free_port()}",)  # the same address after the restart
    async with asyncio.timeout(20), make_node("alice") as alice, HostilePeer() as mallory:
        async with make_node("bob", listen_addrs=bob_at) as bob:
            await alice.connect(bob.listen_addrs[0])
            room = await alice.open_direct(bob.user_id)
            arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            await alice.send(room, b"hello")
            await arriving
            await mallory.connect(bob.listen_addrs[0])
            forge, now_ms = mallory.forge, mallory.now_ms()
            own_leave = forge.membership(room, Action.LEAVE, mallory.user_id, now_ms=now_ms)
            alices_leave = forge.membership(room, Action.LEAVE, alice.user_id, now_ms=now_ms)
            wires = [own_leave.wire, alices_leave.wire]
            refused = "REJECTED:NOT_AUTHORIZED"
            assert await mallory.deliver_wires(bob.peer_id, wires, bob.user_id) == [refused] * 2
            assert bob.peer_points(mallory.peer_id) == 2 * StandingPolicy().item_points
            assert await bob.members(room) == {alice.user_id, bob.user_id}
        async with make_node("bob", listen_addrs=bob_at) as bob:  # the same home, restarted
            assert await bob.members(room) == {alice.user_id, bob.user_id}
            assert await bob.get_event(own_leave.message_id) is None
            await alice.connect(bob.listen_addrs[0])
            arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            sent = await alice.send(room, b"after the attack")
            assert [e.envelope.message_id for e in await arriving] == [sent.message_id]
            await bob.send(room, b"and bob can still write")


async def test_an_own_change_the_rules_refuse_writes_nothing(make_node: NodeFactory) -> None:
    """Finding 3: our own membership change was stored and queued, then folded apart; a refusal
    left it in history and on its way to others. Now it is checked first, and everything
    commits in one transaction or nothing does: no history row, no outbox entry, no sequence
    number spent."""
    bob = UserId(keypair_from_seed(os.urandom(32)).public)  # a member whose home is away
    async with asyncio.timeout(10), make_node("alice") as alice:
        group = await alice.create_group("g", [bob])
        device = alice.keyring.device_id
        store = alice.store
        before = [e.envelope.message_id for e in (await alice.history(group)).events]
        seq_before = await store.read(store.store.last_seq, group, device)
        with pytest.raises(NotAuthorized):
            await alice.add_member(group, bob)  # a member already
        with pytest.raises(NotAuthorized):
            await alice.join(group)  # closed, and a member already
        await alice.leave(group)
        with pytest.raises(NotAuthorized):
            await alice.leave(group)  # not a member any more
        after = [e.envelope.message_id for e in (await alice.history(group)).events]
        assert len(after) == len(before) + 1  # the one LEAVE that was allowed
        assert await store.read(store.store.last_seq, group, device) == seq_before + 1
        queued = await store.run(store.store.take_due, now_ms=1 << 62, limit=1000, lease_ms=0)
        assert {entry.message_id for entry in queued} <= set(after)
        assert await alice.members(group) == {bob}
        listed = await store.read(store.store.conversations, alice.user_id, page_size=100)
        assert group not in {c.room for c in listed.items}  # a group we left is off our list


async def test_our_own_join_or_leave_of_a_direct_room_is_refused_and_changes_nothing(
    make_node: NodeFactory,
) -> None:
    """A direct room takes no MEMBERSHIP event, ours included (SPEC §12.2): leaving or joining
    alice<->bob through the node (the API's /v1/groups/{id}/leave and /join call these) is
    refused, writes nothing, and both can still write."""
    bob = UserId(keypair_from_seed(os.urandom(32)).public)  # away: the room opens on its own
    async with asyncio.timeout(10), make_node("alice") as alice:
        room = await alice.open_direct(bob)
        await alice.send(room, b"hi")
        before = [e.envelope.message_id for e in (await alice.history(room)).events]
        with pytest.raises(NotAuthorized):
            await alice.leave(room)
        with pytest.raises(NotAuthorized):
            await alice.join(room)
        assert [e.envelope.message_id for e in (await alice.history(room)).events] == before
        assert await alice.members(room) == {alice.user_id, bob}
        await alice.send(room, b"still here")


async def test_a_member_added_late_gets_the_earlier_membership_events_and_folds_the_same_state(
    make_node: NodeFactory,
) -> None:
    """SPEC §12.7: whoever adds a member delivers the room's earlier MEMBERSHIP events to
    them, in history order before the ADD: carol, added after the group was made, named and
    given an admin, folds the state alice folds from the same events."""
    async with (
        asyncio.timeout(30),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        for other in (bob, carol):
            await other.connect(alice.listen_addrs[0])
        group = await alice.create_group("hearth", [bob.user_id])
        await alice.groups.set_topic(group, "stories by the fire")
        await alice.groups.set_role(group, bob.user_id, Role.ADMIN)
        await alice.add_member(group, carol.user_id)
        theirs = await alice.room_state(group)
        assert theirs is not None and carol.user_id in theirs.members

        alices = await _membership_ids(alice, group)
        while await _membership_ids(carol, group) != alices:  # noqa: ASYNC110 - no event here
            await asyncio.sleep(0.05)
        ours = await carol.room_state(group)
        assert ours is not None
        assert (ours.name, ours.topic, ours.members) == (theirs.name, theirs.topic, theirs.members)


async def _membership_ids(node: Node, room: RoomId) -> list[bytes]:
    """The MEMBERSHIP events of `room` that `node` holds, in history order."""
    page = await node.history(room, limit=100)
    return [e.envelope.message_id for e in page.events if e.envelope.kind is Kind.MEMBERSHIP]
