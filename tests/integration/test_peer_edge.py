"""The peer edge between real nodes (issue #12 findings 5 and 6): stream caps while an honest
peer delivers, every refusal path charged, bans by address prefix, relays chosen on trust."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost, peer_id_from_seed
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.inbound import InboundPolicy
from hearthmesh.protocol.prefixes import PrefixPolicy
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile.forge import random_room
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory, collect, wait_until, wait_until_async

pytestmark = pytest.mark.integration

NEARLY_FULL = (1 << 20) - 1


def stranger_host(seed: bytes | None = None, *, dial_from: str | None = None) -> P2PHost:
    return P2PHost(HostConfig(identity_seed=seed or os.urandom(32), dial_from=dial_from))


async def send_batch(host: P2PHost, peer: str, batch: bytes) -> None:
    """One deliver frame on a new stream; whatever the answer, or none."""
    with contextlib.suppress(HearthError):
        async with await host.open_stream(peer, DELIVER_PROTOCOL) as stream:
            await stream.write_frame(batch)
            await stream.read_frame()


async def test_streams_past_the_cap_are_refused_while_an_honest_peer_delivers(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 5: streams each holding a frame 1 byte short of 1 MiB. Bob holds at
    most mallory's cap, the bytes of partial frames stay in the budget, mallory pays for its
    excess until it is banned, and alice's messages arrive all the same."""
    inbound = InboundPolicy(
        max_streams_per_peer=4, max_buffered_bytes_per_peer=2 << 20, max_buffered_bytes=8 << 20
    )
    async with (
        asyncio.timeout(20),
        make_node("alice") as alice,
        make_node("bob", inbound=inbound) as bob,
        stranger_host() as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        await mallory.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 5))

        async def hold() -> None:
            with contextlib.suppress(HearthError):
                stream: FrameStream = await mallory.open_stream(bob.peer_id, DELIVER_PROTOCOL)
                data = struct.pack(">I", NEARLY_FULL) + bytes(NEARLY_FULL - 1)
                await stream._bridge.run(stream._raw.write, data)  # a frame held open

        async with asyncio.TaskGroup() as group:  # mallory's streams up to its cap
            for _ in range(inbound.max_streams_per_peer):
                group.create_task(hold())
        assert 0 < bob.inbound.buffered_bytes_of(mallory.peer_id) <= 2 << 20
        sent = [await alice.send(room, f"honest {i}".encode()) for i in range(5)]
        received = await arriving
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        async with asyncio.TaskGroup() as group:  # and far past it
            for _ in range(60):
                group.create_task(hold())
        await wait_until(lambda: bob.is_banned(mallory.peer_id))
        assert 0 < bob.inbound.peak_buffered_bytes <= 2 << 20
        assert not bob.is_banned(alice.peer_id)


async def test_oversized_membership_envelopes_charge_the_peer_until_it_is_banned(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 5: oversized membership envelopes in random rooms reached no charging
    code (1,500 tracebacks, no ban). Whatever path refuses them, the sender pays."""
    async with asyncio.timeout(20), make_node("bob") as bob, HostilePeer() as mallory:
        await mallory.connect(bob.listen_addrs[0])
        for _ in range(1, 40):
            if bob.is_banned(mallory.peer_id):
                break
            room = random_room(os.urandom)
            envelope = mallory.forge.oversized_membership(room, now_ms=mallory.now_ms())
            await mallory.deliver_wires(bob.peer_id, [envelope.wire], bob.user_id)
        await wait_until(lambda: bob.is_banned(mallory.peer_id))


async def test_identities_rotated_from_one_prefix_get_the_prefix_banned(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 5: bans were per peer id, which costs nothing to replace. Here every
    identity from 127.0.0.0/24 (not exempt in this test) is banned after one bad frame; the
    third ban bans the prefix, and a fresh identity from it is refused at once: the first one
    of the interval after its handshake (by its peer id), the next ones before it."""
    prefixes = PrefixPolicy(
        exempt_loopback=False, prefix_ban_identities=3, banned_handshake_interval_ms=600_000
    )
    standing = StandingPolicy(ban_points=25)  # one garbage frame bans: the prefix is the subject
    async with asyncio.timeout(20), make_node("bob", prefixes=prefixes, standing=standing) as bob:
        for _ in range(3):
            async with stranger_host() as mallory:
                await mallory.connect(bob.listen_addrs[0])
                await send_batch(mallory, bob.peer_id, b"\xff\x00garbage")
                await wait_until(lambda m=mallory: bob.is_banned(m.peer_id))  # type: ignore[misc]
        assert bob.prefix_bans == 1
        async with stranger_host() as fresh:
            with contextlib.suppress(HearthError):
                await fresh.connect(bob.listen_addrs[0])
            await wait_until(lambda: fresh.peer_id not in bob.connected_peers())
            with pytest.raises(HearthError):  # refused unread, never served
                async with await fresh.open_stream(bob.peer_id, DELIVER_PROTOCOL) as stream:
                    await stream.write_frame(b"\xff\x00garbage")
                    await stream.read_frame()
        refused = bob.refused_before_handshake  # the dialler's retries after its one handshake
        for _ in range(2):
            async with stranger_host() as later:
                with pytest.raises(HearthError):  # closed before any handshake
                    await later.connect(bob.listen_addrs[0])
            assert bob.refused_before_handshake > refused
            refused = bob.refused_before_handshake


async def test_a_prefix_ban_stays_on_its_network_while_a_newcomer_from_another_connects(
    make_node: NodeFactory,
) -> None:
    """`bench hostile`'s layout (SPEC §11.6.5-6): strangers dial from 127.0.1.x and get
    127.0.1.0/24 banned; fresh identities from it are closed before their handshake, while
    alice, new to bob and dialling from 127.0.0.1, another /24, connects and stays."""
    prefixes = PrefixPolicy(
        exempt_loopback=False, prefix_ban_identities=3, banned_handshake_interval_ms=600_000
    )
    standing = StandingPolicy(ban_points=25)
    async with (
        asyncio.timeout(20),
        make_node("bob", prefixes=prefixes, standing=standing) as bob,
        make_node("alice") as alice,
    ):
        for _ in range(3):
            async with stranger_host(dial_from="127.0.1.7") as mallory:
                await mallory.connect(bob.listen_addrs[0])
                await send_batch(mallory, bob.peer_id, b"\xff\x00garbage")
                await wait_until(lambda m=mallory: bob.is_banned(m.peer_id))  # type: ignore[misc]
        assert bob.prefix_bans == 1
        for _ in range(2):  # the interval's one handshake, then none
            async with stranger_host(dial_from="127.0.1.9") as fresh:
                with contextlib.suppress(HearthError):
                    await fresh.connect(bob.listen_addrs[0])
                await wait_until(lambda f=fresh: f.peer_id not in bob.connected_peers())  # type: ignore[misc]
        assert bob.refused_before_handshake >= 1
        await alice.connect(bob.listen_addrs[0])
        await wait_until(lambda: alice.peer_id in bob.connected_peers())
        assert not bob.is_banned(alice.peer_id)


async def test_new_identities_per_prefix_are_capped(make_node: NodeFactory) -> None:
    prefixes = PrefixPolicy(exempt_loopback=False, new_identities_per_prefix=2)
    async with (
        asyncio.timeout(20),
        make_node("bob", prefixes=prefixes) as bob,
        stranger_host() as first,
        stranger_host() as second,
        stranger_host() as third,
    ):
        for host in (first, second):
            await host.connect(bob.listen_addrs[0])
        await wait_until(lambda: {first.peer_id, second.peer_id} <= set(bob.connected_peers()))
        with contextlib.suppress(HearthError):
            await third.connect(bob.listen_addrs[0])
        await wait_until(lambda: third.peer_id not in bob.connected_peers())
        assert {first.peer_id, second.peer_id} <= set(bob.connected_peers())


async def test_a_grinded_peer_id_that_sorts_first_is_not_preferred_over_a_contacts_home(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 6: the relay was one of the first two connected peers in id order.
    Mallory grinds an id that sorts before carol's; alice's relay for away bob is carol's
    home (alice and carol share a room), and mallory is never asked."""
    async with asyncio.timeout(30), make_node("carol") as carol, make_node("alice") as alice:
        async with make_node("bob") as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        seed = os.urandom(32)
        while peer_id_from_seed(seed) >= carol.peer_id:
            seed = os.urandom(32)
        async with stranger_host(seed) as mallory:
            asked: list[str] = []

            async def deliver(stream: FrameStream) -> None:
                asked.append(stream.remote_peer)

            mallory.set_stream_handler(DELIVER_PROTOCOL, deliver)
            await alice.connect(carol.listen_addrs[0])
            await alice.open_direct(carol.user_id)
            await mallory.connect(alice.listen_addrs[0])
            await wait_until(lambda: mallory.peer_id in alice.connected_peers())
            assert sorted(alice.connected_peers())[0] == mallory.peer_id
            await alice.learn_home_record(bob_record)
            room = await alice.open_direct(bob_id)
            await alice.send(room, b"for bob, who is away")
            await wait_until_async(lambda: carol.relay_held(bob_id), 1)
            assert asked == []
