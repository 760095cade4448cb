"""Groups by invite, and running one (SPEC §30), on real nodes and against a hostile peer.

Alice owns a group. Bob joins it by an invite link through alice's home; carol's joins are
refused with the code of what is wrong with her invite; roles decide who may kick, promote and
rename, at alice's home and at bob's alike. An invite alice issued lets carol in through bob's
home (an admin's), with the history the group shares (SPEC §30.6). Mallory, a raw libp2p host
with a self-made user, tries a join without an invite, a join in someone else's name, a history
request, and, once a member, a forged kick and a promote of herself: each is refused and
nothing is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import Kind, MessageId, RoomId
from hearthmesh.protocol.errors import (
    Banned,
    HistoryNotShared,
    InviteExpired,
    InviteInvalid,
    MembershipConflict,
    RoleRequired,
)
from hearthmesh.protocol.history_share import (
    HISTORY_PROTOCOL,
    HistoryRequest,
    encode_history_request,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invite_record import encode_invite_nonce, invite_id
from hearthmesh.protocol.invites import (
    JOIN_PROTOCOL,
    JoinRequest,
    decode_invite,
    encode_invite,
    encode_join_request,
)
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    decode_membership,
    encode_membership,
)
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

        # bob's rename and topic are folded at alice's home (what `_name_now` reads) before
        # their MessageReceived goes out; under load after this subscription: skip them
        arriving = asyncio.create_task(
            collect(alice.events(), MessageReceived, 1, lambda e: e.envelope.kind is Kind.MESSAGE)
        )
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


@asynccontextmanager
async def _alice_admin_bob_and_carol(
    make_node: NodeFactory,
) -> AsyncIterator[tuple[Node, Node, Node, RoomId]]:
    """Three homes, and alice's group with bob as its admin; carol knows neither of their homes
    yet."""
    async with (
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        await bob.connect(alice.listen_addrs[0])
        await alice.learn_home_record(bob.home_record())
        group = await alice.create_group("hearth", [bob.user_id])
        await alice.groups.set_role(group, bob.user_id, Role.ADMIN)
        await _wait_role(bob, group, bob.user_id, Role.ADMIN)
        yield alice, bob, carol, group


def _through(link: str, node: Node) -> str:
    """The same invite naming only `node`'s home: the joiner must go there (SPEC §30.4.3)."""
    invite = decode_invite(link)
    addrs = tuple(a for a in invite.addrs if a.endswith(node.peer_id))
    assert addrs, f"the link names no address of {node.peer_id}: {invite.addrs}"
    return encode_invite(dataclasses.replace(invite, addrs=addrs))


def held_back(node: Node) -> int:
    """Envelopes the node's release order holds behind a missing number: a gap its fetcher
    asks about once its grace is past (SPEC §8.2, §26)."""
    return node._services.gaps._release.held()


async def _readable(node: Node, room: RoomId) -> list[bytes]:
    """The messages of `room` its user is shown, in history order, that are open here."""
    page = await node.history(room, limit=200)
    shown = (content_of(e.envelope) for e in page.events if e.envelope.kind is Kind.MESSAGE)
    return [c.body for c in shown if c is not None]


async def test_alices_invite_lets_carol_in_through_bobs_home_with_the_shared_history(
    make_node: NodeFactory,
) -> None:
    """SPEC §30.3, §30.6: an invite alice issued is one every admin's home folds, so bob's home
    admits carol by it, and refuses a revoked one; the use counts at alice's home too. With
    history `shared` (3 messages) bob's home gives carol the last 3 messages before her ADD,
    which she reads in history order, and nothing older."""
    async with (
        asyncio.timeout(90),
        _alice_admin_bob_and_carol(make_node) as (alice, bob, carol, group),
    ):
        bodies = [b"first", b"second", b"third"]
        for body in bodies:
            await alice.send(group, body)
        await bob.send(group, b"bob's word")
        expected = [b"second", b"third", b"bob's word"]
        await alice.groups.set_history(group, "shared", 3)
        link, record = await alice.groups.create_invite(group, max_uses=1)
        revoked, revoked_record = await alice.groups.create_invite(group)
        await alice.groups.revoke_invite(group, revoked_record.invite_id)
        # bob's home folds what alice's did: the setting, both invites, the revocation
        await wait_until(
            lambda: (
                _invites_at(bob, group) == {record.invite_id: False, revoked_record.invite_id: True}
            )
        )
        await wait_until_readable(bob, group, [*bodies, b"bob's word"])

        with pytest.raises(InviteInvalid):  # revoked at alice's home: refused at bob's
            await carol.groups.join_by_invite(_through(revoked, bob))
        assert await carol.groups.join_by_invite(_through(link, bob)) == group
        assert await bob.members(group) == {alice.user_id, bob.user_id, carol.user_id}
        await wait_until(lambda: _uses_at(alice, group, record.invite_id) == 1)
        with pytest.raises(InviteExpired):  # spent through bob's home: alice's counts it
            await carol.groups.join_by_invite(_through(link, alice))
        with pytest.raises(InviteExpired):  # ... and so does bob's
            await carol.groups.join_by_invite(_through(link, bob))

        while await _readable(carol, group) != expected:  # noqa: ASYNC110 - arrivals and keys
            await asyncio.sleep(0.05)
        stored = await carol.history(group, limit=200)
        assert all(
            content_of(e.envelope) is not None
            for e in stored.events
            if e.envelope.kind is Kind.MESSAGE
        ), "only what the group shares is given: nothing carol cannot read"
        # SPEC §8.6: alice's "first" is not owed, so nothing waits for it and it is never fetched
        assert held_back(carol) == 0


async def test_with_history_joined_carol_gets_nothing_from_before_her_add(
    make_node: NodeFactory,
) -> None:
    """SPEC §30.6: `joined` (the default) gives a new member nothing sent before their ADD;
    what is sent after reaches them."""
    async with (
        asyncio.timeout(90),
        _alice_admin_bob_and_carol(make_node) as (alice, bob, carol, group),
    ):
        await alice.send(group, b"before carol")
        await wait_until_readable(bob, group, [b"before carol"])
        link, _ = await alice.groups.create_invite(group)
        await wait_until(lambda: len(_invites_at(bob, group)) == 1)
        assert await carol.groups.join_by_invite(_through(link, bob)) == group
        await bob.send(group, b"after carol")
        while await _readable(carol, group) != [b"after carol"]:  # noqa: ASYNC110 - arrival
            await asyncio.sleep(0.05)
        page = await carol.history(group, limit=200)
        stored = [e.envelope for e in page.events if e.envelope.kind is Kind.MESSAGE]
        assert [content_of(e) for e in stored] == [content_of(stored[-1])], "nothing from before"
        assert held_back(carol) == 0, "nor is it waited for (SPEC §8.6)"


async def test_history_is_refused_unless_the_group_shares_and_taken_only_from_an_admin(
    make_node: NodeFactory,
) -> None:
    """Hostile peer: mallory, a member (not an admin) of a `joined` group, asks alice's home
    for history: HISTORY_NOT_SHARED (76), charged, nothing queued for her. Once the group
    shares, a non-member still gets 76. And a joiner takes history only from an admin's listed
    device: asked of a member's home, it refuses before asking and takes nothing."""
    async with asyncio.timeout(30), make_node("alice") as alice, HostilePeer() as mallory:
        group = await alice.create_group("g", [])
        await alice.add_member(group, mallory.user_id)
        peer = await mallory.connect(alice.listen_addrs[0])
        ask = encode_history_request(HistoryRequest(room=group, user=mallory.user_id))
        reply = await mallory.request(peer, HISTORY_PROTOCOL, ask)
        assert reply.summary == "ERROR:HISTORY_NOT_SHARED"
        assert alice.peer_points(mallory.peer_id) > 0
        await alice.groups.set_history(group, "shared", 10)
        await alice.send(group, b"for members")
        stranger = encode_history_request(HistoryRequest(room=group, user=UserId(b"\x07" * 32)))
        # the second request of two: within the server's burst (REQUESTS_BURST), no refill waited
        reply = await mallory.request(peer, HISTORY_PROTOCOL, stranger)
        assert reply.summary == "ERROR:HISTORY_NOT_SHARED"
        assert alice._services.history_server.answered == 0

        # the joiner's side: mallory is no admin, so her home's answer would not be taken
        sessions_before = await alice.store.read(alice.store.store.held_sessions, 100)
        fetch = alice._services.groups._history
        add = await _add_of(alice, group, mallory.user_id)
        with pytest.raises(HistoryNotShared):
            await fetch.after_join(mallory.peer_id, group, add)
        assert await alice.store.read(alice.store.store.held_sessions, 100) == sessions_before
        assert fetch.keys_taken == 0


async def _add_of(node: Node, room: RoomId, user: UserId) -> MessageId:
    page = await node.history(room, limit=200)
    for event in page.events:
        if event.envelope.kind is Kind.MEMBERSHIP:
            change = decode_membership(event.envelope.body)
            if change.action is Action.ADD and change.target == user:
                return event.envelope.message_id
    raise AssertionError("no ADD")


def _invites_at(node: Node, room: RoomId) -> dict[bytes, bool]:
    state = node._services.rooms.view(room)
    return {} if state is None else {i: r.revoked for i, r in state.invites.items()}


def _uses_at(node: Node, room: RoomId, invite_id: bytes) -> int:
    state = node._services.rooms.view(room)
    held = None if state is None else state.invites.get(invite_id)
    return -1 if held is None else held.uses


async def wait_until_readable(node: Node, room: RoomId, bodies: list[bytes]) -> None:
    while await _readable(node, room) != bodies:  # noqa: ASYNC110 - arrivals have no one event
        await asyncio.sleep(0.05)


async def test_a_members_forged_invite_is_never_held_and_its_secret_lets_no_one_in(
    make_node: NodeFactory,
) -> None:
    """Hostile peer: mallory, a member (not an admin), delivers an INVITE of her own secret to
    alice's home (SPEC §30.3.1: only an admin invites). It is not stored nor folded, so a join
    by that secret is INVITE_INVALID, and alice's home holds no invite record for her."""
    async with asyncio.timeout(20), make_node("alice") as alice, HostilePeer() as mallory:
        group = await alice.create_group("g", [])
        await alice.add_member(group, mallory.user_id)
        peer = await mallory.connect(alice.listen_addrs[0])
        secret = b"\x05" * 16
        nonce = encode_invite_nonce(invite_id(secret), mallory.now_ms() + 60_000, 5)
        change = MembershipChange(action=Action.INVITE, target=mallory.user_id, nonce=nonce)
        forged = mallory.forge.seal(
            Kind.MEMBERSHIP,
            group,
            encode_membership(change),
            now_ms=mallory.now_ms(),
            content_type=MEMBERSHIP_CONTENT_TYPE,
        )
        outcome = await mallory.deliver_wires(peer, [forged.wire], alice.user_id)
        assert "STORED" not in outcome, outcome
        assert await alice.get_event(forged.message_id) is None
        assert await alice.groups.held_invites(group) == []
        record = mallory.stranger.home_record(
            peer_ids=(mallory.peer_id,), addrs=(), now_ms=mallory.now_ms()
        )
        join = JoinRequest(room=group, secret=secret, home_record=record)
        reply = await mallory.request(peer, JOIN_PROTOCOL, encode_join_request(join))
        assert reply.summary == "ERROR:INVITE_INVALID"
        assert await alice.members(group) == {alice.user_id, mallory.user_id}
