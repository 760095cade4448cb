"""What a host writes per protocol, and the gossip RPCs py-libp2p drops for a full peer queue
(node/p2p/wire_counts.py, gossip_router.py, pubsub_hello.py; SPEC §20.6), with real hosts on
127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import trio
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import OutBoundQueueSize

from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.node.p2p.pubsub_hello import rpc_kind
from hearthmesh.node.p2p.wire_counts import NEGOTIATION
from tests.node.pubsub_streams import wrap_pubsub_streams

pytestmark = pytest.mark.integration

TOPIC = "hearthmesh/test/wire"
PAYLOAD = 20_000


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]  # noqa: ASYNC110 (counts have no event)
        await asyncio.sleep(0.05)


async def test_each_hosts_writes_are_counted_per_protocol_and_apart() -> None:
    """Two hosts in one process: the one that publishes a 20 kB message counts it on the
    gossip protocol and as a gossip `message`, the other does not (it only read it), and both
    count multistream's writes before a protocol was agreed as `negotiation`."""
    async with (
        asyncio.timeout(30),
        P2PHost(HostConfig(identity_seed=b"\x01" * 32)) as sender,
        P2PHost(HostConfig(identity_seed=b"\x02" * 32)) as reader,
    ):
        await reader.connect(sender.listen_addrs[0])
        await sender.subscribe(TOPIC)
        sub = await reader.subscribe(TOPIC)
        await sender.wait_for_mesh_peer(TOPIC, reader.peer_id)
        before = sender.wire()["bytes"].get(PROTOCOL_ID_V11, 0)
        await sender.publish(TOPIC, b"x" * PAYLOAD)
        async with asyncio.timeout(10):
            await sub.get()
        # counted once its write returned, which may be after the reader had it
        await _until(lambda: sender.wire()["bytes"][PROTOCOL_ID_V11] - before > PAYLOAD)
        sent, read = sender.wire(), reader.wire()
        assert read["bytes"].get(PROTOCOL_ID_V11, 0) < PAYLOAD
        # and by kind: the message, and no message from the reader
        assert sent["bytes"][f"{PROTOCOL_ID_V11} message"] > PAYLOAD
        assert f"{PROTOCOL_ID_V11} message" not in read["bytes"]
        assert sent["writes"][NEGOTIATION] > 0 and read["writes"][NEGOTIATION] > 0
        assert sent["gossip_rpcs_dropped"] == read["gossip_rpcs_dropped"] == 0
        # the router's counts: a heartbeat saw the reader in the mesh, a mesh of one (§20.6)
        await _until(lambda: sender.wire()["gossip"]["mesh_peers_seen"] > 0)
        gossip = sender.wire()["gossip"]
        assert 0 < gossip["mesh_peers_seen"] <= gossip["meshes_seen"] <= gossip["heartbeats"]


def test_a_gossip_rpc_is_counted_as_its_first_part() -> None:
    """A forward that carries control too is a `message`; IHAVE before GRAFT; a hello-like
    RPC of subscriptions alone is a `subscription`."""
    graft = rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=TOPIC)])
    ihave = rpc_pb2.ControlMessage(
        ihave=[rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"id"])],
        graft=[rpc_pb2.ControlGraft(topicID=TOPIC)],
    )
    message = rpc_pb2.Message(data=b"x", topicIDs=[TOPIC])
    assert rpc_kind(rpc_pb2.RPC(publish=[message], control=graft)) == "message"
    assert rpc_kind(rpc_pb2.RPC(control=ihave)) == "ihave"
    assert rpc_kind(rpc_pb2.RPC(control=graft)) == "graft"
    subscribe = rpc_pb2.RPC.SubOpts(subscribe=True, topicid=TOPIC)
    assert rpc_kind(rpc_pb2.RPC(subscriptions=[subscribe])) == "subscription"
    assert rpc_kind(rpc_pb2.RPC()) == "other"


class _StalledStream:
    """A real pubsub stream whose writes after the first (the hello) wait for `release`."""

    def __init__(self, stream: Any, release: threading.Event) -> None:
        self._stream = stream
        self._release = release
        self._writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def write(self, data: bytes) -> None:
        self._writes += 1
        while self._writes > 1 and not self._release.is_set():  # noqa: ASYNC110 (asyncio sets it)
            await trio.sleep(0.01)
        await self._stream.write(data)


async def test_gossip_rpcs_dropped_for_a_full_peer_queue_are_counted() -> None:
    """py-libp2p queues at most 32 RPCs per peer and drops the next ones with a debug line
    only: a peer whose stream stalls loses messages unseen. The sender's stream to its one
    peer stalls after the hello; of 48 messages published, one is in the stalled write and
    the queue holds at most 32, so at least 15 are dropped (the router's drops), and counted
    (status `wire`); then each of 8 topics joined is announced into the full queue (pubsub's
    drops)."""
    release = threading.Event()
    async with (
        asyncio.timeout(60),
        P2PHost(HostConfig(identity_seed=b"\x03" * 32)) as sender,
        P2PHost(HostConfig(identity_seed=b"\x04" * 32)) as reader,
    ):
        wrap_pubsub_streams(sender, lambda stream: _StalledStream(stream, release))
        await sender.subscribe(TOPIC)
        await reader.subscribe(TOPIC)
        await reader.connect(sender.listen_addrs[0])
        await sender.wait_for_mesh_peer(TOPIC, reader.peer_id)
        try:
            for n in range(48):
                await sender.publish(TOPIC, b"message %d" % n)
            dropped = sender.wire()["gossip_rpcs_dropped"]
            assert dropped >= 48 - 1 - OutBoundQueueSize
            for n in range(8):
                await sender.subscribe(f"{TOPIC}/{n}")
            assert sender.wire()["gossip_rpcs_dropped"] >= dropped + 8
            assert reader.wire()["gossip_rpcs_dropped"] == 0
        finally:
            release.set()
