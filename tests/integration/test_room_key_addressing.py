"""Room-key shares addressed to their users' homes (SPEC §27.5.3, §20.7), with real homes on
127.0.0.1: in a group of three each member's home stores the shares of its own user's devices
alone, unsequenced; a home that does not advertise `addressed-room-keys` gets its user's shares
in the sequenced form, to every member, and nobody is charged; and a key that reaches a home
after the messages it opens still shows them in their sender's order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.home_record import decode_home_record
from hearthmesh.protocol.identity import DeviceId, UserId, encode_certificate
from hearthmesh.storage.api import Direction
from hearthmesh.tools.hostile.peer import HostilePeer

from .api_helpers import GroupOfThree, group_of_three
from .conftest import NodeFactory, collect, direct_room_with, refused_where_not_addressed
from .test_e2ee_canary import direct_room

pytestmark = pytest.mark.integration


async def _room_keys(node: Node, room: RoomId, sender: UserId) -> list[Envelope]:
    """The ROOM_KEY envelopes of `sender` that `node` stores in `room`, in history order."""
    store = node.store
    page = await store.read(
        store.store.page_history, room, cursor=None, direction=Direction.FORWARD, limit=500
    )
    return [
        e.envelope
        for e in page.events
        if e.envelope.kind is Kind.ROOM_KEY and e.envelope.sender_user == sender
    ]


def _devices(node: Node) -> set[DeviceId]:
    return {cert.device for cert in decode_home_record(node.home_record()).devices}


def _recipients(keys: list[Envelope]) -> set[DeviceId]:
    return {s.recipient for k in keys for s in e2ee.decode_room_key_shares(k.body).shares}


def _nobody_charged(group: GroupOfThree) -> None:
    homes = group.homes
    for one in homes:
        for other in homes:
            if other is not one:
                assert one.node.peer_points(other.node.peer_id) == 0


async def _alice_says_hello(group: GroupOfThree) -> tuple[RoomId, list[Envelope], list[Envelope]]:
    """alice sends one message; once bob's and carol's clients show it, the room and alice's
    ROOM_KEY envelopes on bob's and on carol's home."""
    alice_ws, bob_ws, carol_ws = group.sockets
    room = group.room
    await alice_ws.send(event="send", room_id=room, message="hello all", client_id="k1")
    await alice_ws.next("message_sent")
    for ws in (bob_ws, carol_ws):
        shown = await ws.next("message", lambda f: f.get("room_id") == room)
        assert shown["message"] == "hello all"
    a, b, c = group.homes
    group_room = RoomId(bytes.fromhex(room))
    on_bob = await _room_keys(b.node, group_room, a.node.user_id)
    on_carol = await _room_keys(c.node, group_room, a.node.user_id)
    return group_room, on_bob, on_carol


async def test_each_members_home_stores_its_own_users_shares_alone_unsequenced(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(90), group_of_three(tmp_path) as group:
        room, on_bob, on_carol = await _alice_says_hello(group)
        a, b, c = group.homes
        bobs, carols = _devices(b.node), _devices(c.node)
        assert on_bob and on_carol
        assert all(k.seq == UNSEQUENCED for k in on_bob + on_carol)
        assert _recipients(on_bob) == bobs  # never a share of carol's devices
        assert _recipients(on_carol) == carols
        assert _recipients(await _room_keys(a.node, room, a.node.user_id)) == bobs | carols
        _nobody_charged(group)


async def test_a_home_that_does_not_advertise_addressed_room_keys_gets_the_sequenced_form(
    tmp_path: Path,
) -> None:
    """carol's home withholds the level: alice's shares for carol's devices go in a sequenced
    ROOM_KEY to every member (bob's home stores it too), bob's are addressed to his homes
    alone; every message opens on both, and nobody is charged (SPEC §20.7)."""
    withheld = frozenset({Level.ADDRESSED_ROOM_KEYS})
    async with asyncio.timeout(90), group_of_three(tmp_path, withheld_levels=withheld) as group:
        _, on_bob, on_carol = await _alice_says_hello(group)
        _, b, c = group.homes
        sequenced = [k for k in on_bob if k.seq != UNSEQUENCED]
        assert _recipients(sequenced) == _devices(c.node)
        assert _recipients([k for k in on_bob if k.seq == UNSEQUENCED]) == _devices(b.node)
        assert on_carol == sequenced  # the addressed key of bob's never reaches carol's home
        _nobody_charged(group)


async def test_a_key_delivered_after_its_messages_shows_them_in_their_senders_order(
    make_node: NodeFactory,
) -> None:
    """alice sends eight messages while bob's home is away; bob's home then gets them, by a
    relay, before their addressed ROOM_KEY: they are stored held and shown nothing, and the
    key shows all eight at once, in the order alice sent them (SPEC §27.5.3, §27.11)."""
    count = 8
    async with asyncio.timeout(60):
        async with make_node("alice") as alice:
            async with make_node("bob") as bob:
                room = await direct_room(alice, bob)
                bob_id = bob.user_id
            sent = [await alice.send(room, f"m{i}".encode()) for i in range(count)]
            (key,) = await _room_keys(alice, room, alice.user_id)
            wires = [e.wire for e in [*sent, key]]
            assert key.seq == UNSEQUENCED
            certificate = next(
                encode_certificate(cert)
                for cert in decode_home_record(alice.home_record()).devices
                if cert.device == key.sender_device
            )
        async with make_node("bob") as bob, HostilePeer() as relay:
            events = bob.events()
            shown = asyncio.create_task(collect(events, MessageReceived, count))
            await relay.connect(bob.listen_addrs[0])

            async def deliver(batch: list[bytes]) -> list[str]:
                items = [BatchItem(0, bob_id, wire) for wire in batch]
                return await relay.deliver(bob.peer_id, items, [certificate])

            assert await deliver(wires[:count]) == ["STORED"] * count  # held: no key yet
            assert await deliver(wires[count:]) == ["STORED"]
            received = await shown
    assert [e.envelope.body for e in received] == [f"m{i}".encode() for i in range(count)]


async def test_a_room_key_delivered_or_gossiped_where_it_is_not_addressed_is_refused_and_charged(
    make_node: NodeFactory,
) -> None:
    """Mallory's addressed ROOM_KEY holds a share for her own device alone and is delivered to
    bob's home: refused NOT_ADDRESSED, nothing stored, mallory charged; the same on the room's
    gossip topic is dropped by the topic check and charged too (SPEC §27.5.3)."""
    async with asyncio.timeout(30), make_node("bob") as bob, HostilePeer() as mallory:
        room, _ = await direct_room_with(bob, mallory)
        forge = mallory.forge
        device = forge.stranger.device
        bundle = e2ee.issue_key_bundle(
            device, identity_key=b"i" * 32, fallback_key=b"f" * 32, issued_ms=mallory.now_ms()
        )
        share = e2ee.Share(recipient=DeviceId(device.public), olm_kind=0, ciphertext=b"c" * 64)
        shares = e2ee.RoomKeyShares(sender_bundle=bundle, shares=(share,))
        body = e2ee.encode_room_key_shares(shares)

        def room_key() -> Envelope:
            return forge.seal(
                Kind.ROOM_KEY,
                room,
                body,
                now_ms=mallory.now_ms(),
                content_type=e2ee.ROOM_KEY_CONTENT_TYPE,
            )

        assert room_key().seq == UNSEQUENCED
        await refused_where_not_addressed(bob, mallory, room, room_key)
