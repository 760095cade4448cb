"""A new gossip peer learns every subscription, even one made while its stream opened
(node/p2p/pubsub_hello.py, SPEC §14.3), with real hosts on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import libp2p.pubsub.pubsub as pubsub_module
import multiaddr  # type: ignore[import-untyped]
import pytest
import trio
from libp2p.peer.id import ID

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.gossip import Subscription
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.node.p2p.peer_records import consume_once
from tests.integration.conftest import wait_until
from tests.node.pubsub_streams import gossip_streams_on_their_connection, wrap_pubsub_streams

pytestmark = pytest.mark.integration

TOPIC = "hearthmesh/test/hello"


class _HeldStream:
    """A real pubsub stream whose first write (the hello) waits until `release` is set."""

    def __init__(self, stream: Any, writing: threading.Event, release: threading.Event) -> None:
        self._stream = stream
        self._writing = writing
        self._release = release
        self._held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def write(self, data: bytes) -> None:
        if not self._held:
            self._held = True
            self._writing.set()
            while not self._release.is_set():  # noqa: ASYNC110 (set on the asyncio thread)
                await trio.sleep(0.01)
        await self._stream.write(data)


def _subscribers(host: P2PHost) -> set[str]:
    """The peers `host` knows to be in TOPIC (read from another thread: copied until stable)."""
    pubsub = host._gossip._pubsub
    assert pubsub is not None
    while True:
        try:
            return {peer.to_base58() for peer in pubsub.peer_topics.get(TOPIC, set())}
        except RuntimeError:  # changed during the copy
            continue


def _records_from(sender: P2PHost, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per RPC a host of this process takes from `sender`: whether it carried a signed record
    (each still checked by `consume_once`, as the hosts install it)."""
    carried: list[bool] = []

    def counting(msg: Any, host: Any, peer_id: ID) -> bool:
        if peer_id.to_base58() == sender.peer_id:
            carried.append(msg.HasField("senderRecord"))
        return consume_once(msg, host, peer_id)

    monkeypatch.setattr(pubsub_module, "maybe_consume_signed_record", counting)
    return carried


@asynccontextmanager
async def _publisher_and_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[P2PHost, P2PHost, Subscription, list[bool]]]:
    """Two hosts in TOPIC, the reader connected to the publisher: its subscription, and per
    RPC it took from the publisher whether that carried a record (`_records_from`)."""
    async with (
        P2PHost(HostConfig(identity_seed=b"\x01" * 32)) as publisher,
        P2PHost(HostConfig(identity_seed=b"\x02" * 32)) as reader,
    ):
        carried = _records_from(publisher, monkeypatch)
        sub = await reader.subscribe(TOPIC)
        await publisher.subscribe(TOPIC)
        await reader.connect(publisher.listen_addrs[0])
        yield publisher, reader, sub, carried


async def test_a_subscription_made_while_a_peers_hello_is_written_reaches_that_peer() -> None:
    """py-libp2p built a new peer's hello, then awaited its write before adding the peer to
    those that `subscribe` announces to: a topic joined in between reached the peer by neither,
    so it never put us in its mesh for that topic."""
    writing, release = threading.Event(), threading.Event()
    async with (
        asyncio.timeout(30),
        P2PHost(HostConfig(identity_seed=b"\x01" * 32)) as joiner,
        P2PHost(HostConfig(identity_seed=b"\x02" * 32)) as peer,
    ):
        wrap_pubsub_streams(joiner, lambda stream: _HeldStream(stream, writing, release))
        await peer.connect(joiner.listen_addrs[0])
        while not writing.is_set():  # noqa: ASYNC110 (set on the joiner's trio thread)
            await asyncio.sleep(0.01)
        await joiner.subscribe(TOPIC)  # its hello, built before, named no topic
        release.set()
        while joiner.peer_id not in _subscribers(peer):  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.02)


async def test_our_signed_record_goes_once_per_stream_not_in_every_rpc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p put our signed peer record (some 210 bytes) in every pubsub RPC, a quarter of
    a node's gossip bytes at scale; a peer needs it once per stream, and again only when it
    changes (node/p2p/peer_records.py, SPEC §14.3). One host publishes 8 messages to another:
    every message arrives, the record was taken, and at most the hello and the first RPC after
    it carried the record."""
    async with asyncio.timeout(30), _publisher_and_reader(monkeypatch) as hosts:
        publisher, reader, sub, carried = hosts
        while publisher.peer_id not in _subscribers(reader):  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.02)
        for n in range(8):
            await publisher.publish(TOPIC, b"message %d" % n)
        while sub.delivered < 8:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.02)
        pubsub = reader._gossip._pubsub
        assert pubsub is not None
        assert pubsub.host.get_peerstore().get_peer_record(ID.from_base58(publisher.peer_id))
        assert len(carried) >= 8
        assert sum(carried) <= 2


async def test_a_reconnect_before_the_old_connection_closed_greets_again_on_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second connection that comes while the first is still up gets no pubsub stream of
    its own (py-libp2p skips a peer it has one for); once the first closes, each side's
    stream on it ends, and the peer must be greeted again on the new connection, our record
    with it, or gossip between the two stops (SPEC §14.3). Two hosts: the reader dials the
    publisher a second time, closes the first connection, and a message still arrives, from
    a stream on the new connection that carried the publisher's record again."""
    async with asyncio.timeout(30), _publisher_and_reader(monkeypatch) as hosts:
        publisher, reader, sub, carried = hosts
        await publisher.wait_for_mesh_peer(TOPIC, reader.peer_id)
        reader_pubsub = reader._gossip._pubsub
        assert reader_pubsub is not None
        peer = ID.from_base58(publisher.peer_id)
        network = reader_pubsub.host.get_network()
        (first,) = network.get_connections(peer)

        async def redial() -> None:
            await network.dial_addr(multiaddr.Multiaddr(publisher.listen_addrs[0]), peer)

        await reader._call(P2PError, "redial", redial)
        assert len(network.get_connections(peer)) == 2
        records_before = sum(carried)
        await reader._call(P2PError, "close the first", first.close)
        async with asyncio.timeout(10):  # each side's stream to the other
            await wait_until(lambda: gossip_streams_on_their_connection(reader, publisher))
        await publisher.wait_for_mesh_peer(TOPIC, reader.peer_id)
        await publisher.publish(TOPIC, b"after the redial")
        async with asyncio.timeout(10):
            assert (await sub.get()).data == b"after the redial"
        assert sum(carried) > records_before  # the new stream carried the record again
