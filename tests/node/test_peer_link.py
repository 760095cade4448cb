"""PeerLinks (node/delivery/peer_link.py): what a batch left unanswered past the ack bound
closes (SPEC §11.5.2), between two real hosts on this machine."""

from __future__ import annotations

import asyncio
import time

import pytest

from hearthmesh.node.delivery.peer_link import DeliveryFailed, PeerLinks
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import LIVE_PING_S
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import config, hosts
from tests.node.test_webrtc import webrtc_only

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 0.5


async def never_answers(stream: FrameStream) -> None:
    """A deliver handler that reads the batch and sends no ack (a dead or stuck path)."""
    await stream.read_frame()
    await asyncio.sleep(30)


async def test_an_unanswered_batch_closes_the_tcp_connection_so_the_next_try_dials() -> None:
    """B's libp2p thread stops (a dead path: nothing comes back, not even a ping's pong)."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):

        async def freezes(stream: FrameStream) -> None:
            await stream.read_frame()
            b._bridge.run_sync_soon(time.sleep, LIVE_PING_S + 1)  # past the ping's bound
            await asyncio.sleep(30)

        b.set_stream_handler(DELIVER_PROTOCOL, freezes)
        await a.connect(b.listen_addrs[0])
        with pytest.raises(DeliveryFailed, match="TimeoutError"):
            await PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S).deliver(b.peer_id, [], [])
        await wait_until(lambda: b.peer_id not in a.connected_peers())


async def test_an_unanswered_batch_keeps_a_connection_that_answers_a_ping() -> None:
    """B's application never acks, but its connection carries bytes both ways: slow, not
    gone. Closing it cut every stream on it and under load made each home dial again
    (SPEC §11.5.2)."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, never_answers)
        await a.connect(b.listen_addrs[0])
        with pytest.raises(DeliveryFailed, match="TimeoutError"):
            await PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S).deliver(b.peer_id, [], [])
        await asyncio.sleep(1.0)  # the ping and the close it would have started
        assert b.peer_id in a.connected_peers()


async def test_an_unanswered_batch_keeps_a_webrtc_connection_no_dial_could_replace() -> None:
    """With the relay gone, WebRTC is the only path between two homes, and closing it left
    them apart for good; a WebRTC path that died closes with ICE consent (SPEC §10.11)."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, never_answers)
        await webrtc_only(a, b)
        links = PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S)
        with pytest.raises(DeliveryFailed, match="TimeoutError"):
            await links.deliver(b.peer_id, [], [])
        await asyncio.sleep(0.5)  # the close it would have started
        assert a.peer_paths().get(b.peer_id) == ["webrtc"]
