"""Supervision (SPEC §11.8): what a stranger sends can end neither a service nor the node."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.host import HostConfig, P2PHost, peer_id_from_seed
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, BatchItem, encode_deliver
from hearthmesh.protocol.envelope import Kind, RoomId, seal
from hearthmesh.protocol.errors import HearthError
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
from hearthmesh.protocol.membership import MEMBERSHIP_CONTENT_TYPE
from hearthmesh.protocol.rooms import direct_room_id

from .api_helpers import home
from .conftest import NodeFactory, collect, free_port, node_config

pytestmark = pytest.mark.integration


async def test_a_gossip_message_that_breaks_the_listener_does_not_end_the_node(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 1: a stranger's correctly signed MEMBERSHIP envelope with a body over
    the limit, on the topic of alice and bob's direct room, made bob's room listener raise and
    stopped every service of bob's node. Now it costs that message alone: bob's node goes on,
    and alice's next message reaches bob over that very room."""
    async with (
        asyncio.timeout(20),
        make_node("alice") as alice,
        make_node("bob") as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        assert await bob.open_direct(alice.user_id) == room  # bob follows the room's topic
        topic = room_topic(room)
        await mallory.connect(bob.listen_addrs[0])
        subscription = await mallory.subscribe(topic)
        await mallory.wait_for_mesh_peer(topic, bob.peer_id)
        user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
        certificate = issue_certificate(user, DeviceId(device.public), created_ms=0)
        oversized = seal(
            device,
            kind=Kind.MEMBERSHIP,
            room=direct_room_id(alice.user_id, bob.user_id),
            sender_user=UserId(user.public),
            seq=1,
            hlc=Timestamp(wall_ms=1, counter=0),
            content_type=MEMBERSHIP_CONTENT_TYPE,
            body=b"\x00" * 600,
        )
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
        await mallory.publish(topic, encode_gossip(encode_certificate(certificate), oversized.wire))
        await subscription.unsubscribe()
        # the listener took mallory's message, charged mallory for it, and goes on
        while bob.peer_points(mallory.peer_id) == 0:  # noqa: ASYNC110 - a count with no event
            await asyncio.sleep(0.02)
        sent = await alice.send(room, b"still there?")
        [received] = await arriving
        assert received.envelope.message_id == sent.message_id
        assert await bob.get_event(oversized.message_id) is None


async def test_deliveries_that_break_the_handler_cost_their_sender_a_ban(
    make_node: NodeFactory,
) -> None:
    """Issue #12 finding 5: the same oversized MEMBERSHIP envelope over the deliver protocol
    made bob's handler raise; each failure logged a traceback and reached no standing code, so
    a flood never got mallory banned. Now each costs mallory, who is banned; alice's messages
    still arrive."""
    async with (
        asyncio.timeout(20),
        make_node("alice") as alice,
        make_node("bob") as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        await mallory.connect(bob.listen_addrs[0])
        user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
        certificate = encode_certificate(
            issue_certificate(user, DeviceId(device.public), created_ms=0)
        )
        room = direct_room_id(alice.user_id, bob.user_id)
        for seq in range(1, 40):
            oversized = _oversized_membership(device, UserId(user.public), room, seq)
            try:
                stream = await mallory.open_stream(bob.peer_id, DELIVER_PROTOCOL)
                await stream.write_frame(
                    encode_deliver(seq, [certificate], [BatchItem(0, bob.user_id, oversized)])
                )
                await stream.read_frame()  # an ack (REJECTED), or the stream ends
            except HearthError:
                pass
            if bob.is_banned(mallory.peer_id):
                break
        assert bob.is_banned(mallory.peer_id)
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
        sent = await alice.send(await alice.open_direct(bob.user_id), b"still there?")
        [received] = await arriving
        assert received.envelope.message_id == sent.message_id


def _oversized_membership(device: KeyPair, user: UserId, room: RoomId, seq: int) -> bytes:
    """A correctly signed MEMBERSHIP envelope whose body is over the membership limit."""
    return seal(
        device,
        kind=Kind.MEMBERSHIP,
        room=room,
        sender_user=user,
        seq=seq,
        hlc=Timestamp(wall_ms=seq, counter=0),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        body=b"\x00" * 600,
    ).wire


def _still_open(connection: socket.socket) -> bool:
    """Read what the dialler sent so far: True while it has not closed its end."""
    connection.setblocking(False)
    while True:
        try:
            if not connection.recv(4096):
                return False
        except BlockingIOError:
            return True


async def test_the_api_answers_while_a_bootstrap_dial_hangs(tmp_path: Path) -> None:
    """Issue #12 availability (a): the start path waits for no peer. The bootstrap peer is a
    socket that takes the connection and never answers, so the dial cannot complete; the API
    answers first, with that dial still open."""
    with socket.create_server(("127.0.0.1", 0)) as blackhole:
        port = blackhole.getsockname()[1]
        stranger = peer_id_from_seed(os.urandom(32))
        address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{stranger}"
        async with asyncio.timeout(8), home(tmp_path / "a", bootstrap=(address,)) as a:
            assert (await a.status())["user_id"]
            loop = asyncio.get_running_loop()
            blackhole.setblocking(False)
            connection, _ = await loop.sock_accept(blackhole)  # the dial under way
            with connection:
                assert _still_open(connection)  # not given up: it goes on in the background
                assert stranger not in a.node.connected_peers()


async def test_a_home_back_from_an_outage_gets_its_backlog_from_the_next_probe(
    tmp_path: Path,
) -> None:
    """Issue #12 availability (b): bob's node went away and came back at the same address,
    dialling no one. A failed dial had put bob in libp2p's negative cache for a minute, so
    alice's probes failed without dialling and the backlog waited 30-60 s; now her next probe
    (outage_probe_max_ms) dials, and everything parked follows."""
    listen = f"/ip4/127.0.0.1/tcp/{free_port()}"  # the same address after the restart
    bob_config = node_config(tmp_path / "bob", listen_addrs=(listen,))
    async with (
        asyncio.timeout(60),  # ~6 s; 300 encrypted sends took more than 9 s at load 13
        Node(node_config(tmp_path / "alice", outage_probe_max_ms=500)) as alice,
    ):
        async with Node(bob_config) as bob:
            bob_address = bob.listen_addrs[0]
            await alice.connect(bob_address)
            room = await alice.open_direct(bob.user_id)
            await alice.send(room, b"before")
            while alice.outbox_delivered < 1:  # noqa: ASYNC110 - a count with no event
                await asyncio.sleep(0.02)
        for i in range(300):
            await alice.send(room, f"while away {i}".encode())
        with pytest.raises(HearthError):
            await alice.connect(bob_address)  # refused: libp2p remembers bob as failed
        async with Node(bob_config) as bob, asyncio.timeout(25):
            # Well inside the negative cache's minute, which held the backlog 30-60 s. 301
            # messages (the ROOM_KEYs of its Megolm sessions aside, SPEC §27.5)
            while len((await bob.history(room, limit=1000)).events) < 301:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_node_whose_bootstrap_peer_is_down_answers_and_publishes_once_it_is_up(
    tmp_path: Path,
) -> None:
    """Issue #13: start and connect wait on no peer and no DHT put. Alice's bootstrap peer
    (bob, at a port where nothing listens yet) refuses her dials; her API answers meanwhile,
    and once bob is up her retries reach him and her home record goes into the DHT."""
    listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    bob_config = node_config(tmp_path / "bob", listen_addrs=(listen,))
    async with Node(bob_config) as bob:  # only to learn bob's peer id and address
        bob_address = bob.listen_addrs[0]
    async with (
        asyncio.timeout(20),
        home(tmp_path / "a", bootstrap=(bob_address,), bootstrap_retry_max_ms=200) as a,
    ):
        assert (await a.status())["user_id"]  # up, with the bootstrap peer down
        assert bob.peer_id not in a.node.connected_peers()
        async with Node(bob_config):
            await a.node.home_record_published()
            assert bob.peer_id in a.node.connected_peers()
