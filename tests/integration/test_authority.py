"""Room authority against a stranger (issue 12, findings 1-3; SPEC §12.2, §12.6).

Mallory is a raw libp2p host with a self-made user identity and no relationship with anyone:
whatever MEMBERSHIP envelope she sends, by gossip or by deliver, is refused before it is stored,
costs her points, and leaves the victim's rooms and services as they were.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.libp2p_host import HostConfig, P2PHost
from hearthmesh.node.node import Node
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    AckStatus,
    BatchItem,
    decode_frame,
    encode_deliver,
)
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode, NotAuthorized
from hearthmesh.protocol.gossip import encode_gossip, room_topic
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    DeviceId,
    KeyPair,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    encode_membership,
)
from hearthmesh.protocol.standing import StandingPolicy

from .conftest import NodeFactory, collect, free_port, wait_until

pytestmark = pytest.mark.integration

OVERSIZED_BODY = b"\x86" + b"\x00" * 600
"""Over the 512-byte MEMBERSHIP body limit: TooLarge once escaped the fold and ended the node."""


@dataclass
class Mallory:
    host: P2PHost
    user: KeyPair
    device: KeyPair
    certificate: bytes

    @property
    def user_id(self) -> UserId:
        return UserId(self.user.public)

    def membership(self, room: RoomId, body: bytes, *, seq: int = 1) -> Envelope:
        return seal(
            self.device,
            kind=Kind.MEMBERSHIP,
            room=room,
            sender_user=self.user_id,
            seq=seq,
            hlc=Timestamp(wall_ms=seq, counter=0),
            content_type=MEMBERSHIP_CONTENT_TYPE,
            body=body,
        )

    async def deliver(self, node: Node, envelopes: list[Envelope]) -> list[tuple[int, int]]:
        """(status, code) of each envelope in the victim's signed ack."""
        items = [BatchItem(0, node.user_id, e.wire) for e in envelopes]
        async with await self.host.open_stream(node.peer_id, DELIVER_PROTOCOL) as stream:
            await stream.write_frame(encode_deliver(1, [self.certificate], items))
            ack = decode_frame(await stream.read_frame())
        assert isinstance(ack, Ack)
        return [(r.status, r.code) for r in ack.results]


@asynccontextmanager
async def mallory_host() -> AsyncIterator[Mallory]:
    user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
    certificate = encode_certificate(issue_certificate(user, DeviceId(device.public), created_ms=0))
    async with P2PHost(HostConfig(identity_seed=os.urandom(32))) as host:
        yield Mallory(host=host, user=user, device=device, certificate=certificate)


def leave(user: UserId) -> bytes:
    return encode_membership(MembershipChange(action=Action.LEAVE, target=user))


async def test_an_oversized_membership_body_on_gossip_leaves_the_node_up(
    make_node: NodeFactory,
) -> None:
    """Finding 1: one gossip message used to end every service of the node. Now the topic
    validator drops it (MEMBERSHIP never travels on gossip) and charges the forwarder."""
    async with (
        asyncio.timeout(10),
        make_node("alice") as alice,
        make_node("bob") as bob,
        mallory_host() as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        room = await bob.open_direct(alice.user_id)  # bob follows the room's topic
        await alice.open_direct(bob.user_id)
        topic = room_topic(room)
        await mallory.host.connect(bob.listen_addrs[0])
        async with await mallory.host.subscribe(topic):
            await mallory.host.wait_for_mesh_peer(topic, bob.peer_id)
            poison = mallory.membership(room, OVERSIZED_BODY)
            await mallory.host.publish(topic, encode_gossip(mallory.certificate, poison.wire))
            await wait_until(lambda: bob.peer_points(mallory.host.peer_id) > 0)
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
    async with asyncio.timeout(10), make_node("bob") as bob, mallory_host() as mallory:
        group = await bob.create_group("g", [])
        await mallory.host.connect(bob.listen_addrs[0])
        poison = mallory.membership(group, OVERSIZED_BODY)
        assert await mallory.deliver(bob, [poison]) == [(AckStatus.REJECTED, ErrorCode.TOO_LARGE)]
        assert bob.peer_points(mallory.host.peer_id) == StandingPolicy().item_points
        await bob.add_member(group, carol)
        assert await bob.members(group) == {bob.user_id, carol}
        assert await bob.get_event(poison.message_id) is None


async def test_a_strangers_leave_changes_nothing_in_a_direct_room_even_after_a_restart(
    make_node: NodeFactory,
) -> None:
    """Finding 2: one LEAVE from a stranger into alice<->bob emptied bob's member list for good.
    Now a direct room takes no MEMBERSHIP event: NOT_AUTHORIZED, stored nowhere, charged."""
    bob_at = (f"/ip4/127.0.0.1/tcp/{free_port()}",)  # the same address after the restart
    async with asyncio.timeout(20), make_node("alice") as alice, mallory_host() as mallory:
        async with make_node("bob", listen_addrs=bob_at) as bob:
            await alice.connect(bob.listen_addrs[0])
            room = await alice.open_direct(bob.user_id)
            arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            await alice.send(room, b"hello")
            await arriving
            await mallory.host.connect(bob.listen_addrs[0])
            own_leave = mallory.membership(room, leave(mallory.user_id), seq=1)
            alices_leave = mallory.membership(room, leave(alice.user_id), seq=2)
            refused = (AckStatus.REJECTED, ErrorCode.NOT_AUTHORIZED)
            assert await mallory.deliver(bob, [own_leave, alices_leave]) == [refused, refused]
            assert bob.peer_points(mallory.host.peer_id) == 2 * StandingPolicy().item_points
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
