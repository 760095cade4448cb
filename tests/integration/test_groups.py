"""Groups by invite, and running one (SPEC §30), on real nodes and against a hostile peer.

Alice owns a group. Bob joins it by an invite link through alice's home; carol's joins are
refused with the code of what is wrong with her invite; roles decide who may kick, promote and
rename, at alice's home and at bob's alike. Mallory, a raw libp2p host with a self-made user,
tries a join without an invite, a join in someone else's name, and, once a member, a forged
kick and a promote of herself: each is refused and nothing is stored.
"""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import (
    Banned,
    InviteExpired,
    InviteInvalid,
    MembershipConflict,
    RoleRequired,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invites import (
    JOIN_PROTOCOL,
    JoinRequest,
    decode_invite,
    encode_join_request,
)
from hearthmesh.protocol.membership import Action, Role
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory, collect, wait_until

pytestmark = pytest.mark.integration


async def _role_at(node: Node, room: RoomId, user: UserId) -> Role | None:
    state = await node.room_state(room)
    return None if state is None else state.members.get(user)


async def _wait_role(node: Node, room: RoomId, user: UserId, role: Role | None) -> None:
    while await _role_at(node, room, user) is not role:  # noqa: ASYNC110 - a fold has no event
        await asyncio.sleep(0.02)


async def test_join_by_invite_then_run_the_group(make_node: NodeFactory) -> None:
    async with (
        asyncio.timeout(30),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        group = await alice.create_group("hearth", [])
        link, record = await alice.groups.create_invite(group, max_uses=1)
        assert link.startswith("hearthmesh:join/")
        assert decode_invite(link).room == group
        assert await bob.groups.join_by_invite(link) == group
        assert await bob.members(group) == {alice.user_id, bob.user_id}
        assert await alice.members(group) == {alice.user_id, bob.user_id}
        assert (await alice.groups.held_invites(group))[0].uses == 1

        with pytest.raises(InviteExpired):  # its one use is spent
            await carol.groups.join_by_invite(link)
        expired, short = await alice.groups.create_invite(group, ttl_ms=300)
        await wait_until(lambda: alice._clock.now_ms() >= short.expires_ms)
        with pytest.raises(InviteExpired):
            await carol.groups.join_by_invite(expired)
        revoked, revoked_record = await alice.groups.create_invite(group)
        await alice.groups.revoke_invite(group, revoked_record.invite_id)
        with pytest.raises(InviteInvalid):
            await carol.groups.join_by_invite(revoked)
        await alice.groups.ban(group, carol.user_id)  # not a member: banned beforehand
        fresh, _ = await alice.groups.create_invite(group)
        with pytest.raises(Banned):
            await carol.groups.join_by_invite(fresh)
        assert await alice.members(group) == {alice.user_id, bob.user_id}
        assert record.max_uses == 1

        with pytest.raises(RoleRequired):  # a member kicks the owner
            await bob.groups.kick(group, alice.user_id)
        with pytest.raises(RoleRequired):  # ... or promotes himself
            await bob.groups.set_role(group, bob.user_id, Role.ADMIN)
        await alice.groups.set_role(group, bob.user_id, Role.ADMIN)
        with pytest.raises(MembershipConflict):
            await alice.groups.set_role(group, bob.user_id, Role.ADMIN)
        await _wait_role(bob, group, bob.user_id, Role.ADMIN)
        with pytest.raises(RoleRequired):  # an admin does not outrank the owner
            await bob.groups.kick(group, alice.user_id)
        await bob.groups.rename(group, "hearth and home")
        await bob.groups.set_topic(group, "where we meet")
        await wait_until(lambda: _name_now(alice, group) == ("hearth and home", "where we meet"))

        arriving = asyncio.create_task(collect(alice.events(), MessageReceived, 1))
        sent = await bob.send(group, b"glad to be here")
        assert [e.envelope.message_id for e in await arriving] == [sent.message_id]


def _name_now(node: Node, room: RoomId) -> tuple[str, str] | None:
    state = node._services.rooms.view(room)
    return None if state is None else (state.name, state.topic)


async def test_a_join_without_a_valid_invite_is_refused_and_charged(
    make_node: NodeFactory,
) -> None:
    """Hostile peer: a made-up secret, then a real one in someone else's name. Both answer
    INVITE_INVALID (60), cost points, and store nothing; the invite keeps its use."""
    async with asyncio.timeout(15), make_node("alice") as alice, HostilePeer() as mallory:
        group = await alice.create_group("g", [])
        link, _ = await alice.groups.create_invite(group)
        invite = decode_invite(link)
        peer = await mallory.connect(alice.listen_addrs[0])
        history_before = len((await alice.history(group)).events)
        own_record = mallory.stranger.home_record(
            peer_ids=(mallory.peer_id,), addrs=(), now_ms=mallory.now_ms()
        )
        guessed = JoinRequest(room=group, secret=b"\x00" * 16, home_record=own_record)
        reply = await mallory.request(peer, JOIN_PROTOCOL, encode_join_request(guessed))
        assert reply.summary == "ERROR:INVITE_INVALID"
        assert alice.peer_points(mallory.peer_id) == StandingPolicy().frame_points
        # the real secret, with a record that names a home other than the asking peer
        other = mallory.stranger.home_record(
            peer_ids=(alice.peer_id,), addrs=(), now_ms=mallory.now_ms()
        )
        borrowed = JoinRequest(room=group, secret=invite.secret, home_record=other)
        reply = await mallory.request(peer, JOIN_PROTOCOL, encode_join_request(borrowed))
        assert reply.summary == "ERROR:INVITE_INVALID"
        assert await alice.members(group) == {alice.user_id}
        assert len((await alice.history(group)).events) == history_before
        assert (await alice.groups.held_invites(group))[0].uses == 0


async def test_a_members_forged_kick_and_self_promotion_change_nothing(
    make_node: NodeFactory,
) -> None:
    """Hostile peer: mallory is a member (not an admin) and delivers a KICK of bob and a ROLE
    making herself admin straight to alice's home. Neither is stored nor applied."""
    async with asyncio.timeout(15), make_node("alice") as alice, HostilePeer() as mallory:
        group = await alice.create_group("g", [])
        bob = alice.user_id  # any member will do as the target: the owner herself
        await alice.add_member(group, mallory.user_id)
        peer = await mallory.connect(alice.listen_addrs[0])
        forge, now_ms = mallory.forge, mallory.now_ms()
        kick = forge.membership(group, Action.KICK, bob, now_ms=now_ms)
        promote = forge.membership(
            group, Action.ROLE, mallory.user_id, now_ms=now_ms, role=Role.ADMIN
        )
        outcome = await mallory.deliver_wires(peer, [kick.wire, promote.wire], alice.user_id)
        assert "STORED" not in outcome, outcome
        for forged in (kick, promote):
            assert await alice.get_event(forged.message_id) is None
        state = await alice.room_state(group)
        assert state is not None
        assert state.members == {alice.user_id: Role.OWNER, mallory.user_id: Role.MEMBER}
