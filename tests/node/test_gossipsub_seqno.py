"""A host restarted after a crash signs no gossip sequence number it signed before, so its
peers forward what it publishes (node/p2p/gossipsub.py `first_seqno`, SPEC §14.3), with real
hosts on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from hearthmesh.node.p2p.gossip import Subscription
from hearthmesh.node.p2p.gossipsub import first_seqno
from hearthmesh.node.p2p.host import HostConfig, P2PHost

pytestmark = pytest.mark.integration

TOPIC = "hearthmesh/test/seqno"
BURST = 200
"""Messages published before the crash: a burst takes a second or two, so the publisher's
numbers run ~200 ahead of a counter that started at the wall clock in seconds."""


def _config(n: int) -> HostConfig:
    return HostConfig(
        identity_seed=bytes([n]) * 32, message_id=lambda data: hashlib.sha256(data).digest()
    )


async def _drain_until(sub: Subscription, wanted: bytes) -> None:
    while not (await sub.get()).data.startswith(wanted):
        pass


def _pubsub_peers(host: P2PHost) -> set[str]:
    """The peers `host`'s pubsub holds a stream of (read from another thread: copied until
    stable)."""
    pubsub = host._gossip._pubsub
    assert pubsub is not None
    while True:
        try:
            return {peer.to_base58() for peer in pubsub.peers}
        except RuntimeError:  # changed during the copy
            continue


def test_the_first_seqno_is_the_wall_clock_in_nanoseconds() -> None:
    assert first_seqno(1_764_966_000_000) == 1_764_966_000_000 * 1_000_000
    assert first_seqno(2**40).bit_length() <= 64  # fits the 8 bytes it is signed as


async def test_a_restarted_publishers_messages_are_still_forwarded() -> None:
    """a - b - c in a line: c hears a only through b. py-libp2p started a's numbers at the
    wall clock in seconds, so a burst ran them ahead, and a restarted a signed numbers that b
    had seen with other data: b took it for equivocation and forwarded none of them."""
    async with (
        asyncio.timeout(40),
        P2PHost(_config(2)) as b,
        P2PHost(_config(3)) as c,
    ):
        await c.connect(b.listen_addrs[0])
        heard = await c.subscribe(TOPIC)
        await b.subscribe(TOPIC)
        await b.wait_for_mesh_peer(TOPIC, c.peer_id)
        async with P2PHost(_config(1)) as a:
            await a.connect(b.listen_addrs[0])
            await a.subscribe(TOPIC)
            await a.wait_for_mesh_peer(TOPIC, b.peer_id)
            for n in range(BURST):
                await a.publish(TOPIC, b"before %d" % n)
            await _drain_until(heard, b"before %d" % (BURST - 1))  # b forwarded the burst
        while a.peer_id in b.connected_peers() or a.peer_id in _pubsub_peers(b):  # noqa: ASYNC110
            # else b may take the new connection for the old one's and greet it not at all
            await asyncio.sleep(0.02)
        async with P2PHost(_config(1)) as again:  # the same identity, a moment later
            await again.connect(b.listen_addrs[0])
            await again.subscribe(TOPIC)

            async def publish_until_heard() -> None:
                # b may take a moment to graft the new connection: one message a tenth of a
                # second until c hears one (a mesh peer or not, b forwards what it takes in)
                for n in range(100):
                    await again.publish(TOPIC, b"after the restart %d" % n)
                    await asyncio.sleep(0.1)

            async with asyncio.timeout(10), asyncio.TaskGroup() as group:
                publishing = group.create_task(publish_until_heard())
                await _drain_until(heard, b"after the restart")
                publishing.cancel()
