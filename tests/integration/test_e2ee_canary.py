"""End-to-end encryption on real nodes (SPEC §27): a canary sent in a direct room and in a group
is read by the members' devices and by nobody else. The relay that held it for an away member
and a stranger subscribed to the group's gossip topic keep ciphertext only: the canary's bytes
are in none of their files, and in no log line of any node."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, decode_envelope
from hearthmesh.protocol.gossip import room_topic
from hearthmesh.storage.api import Direction
from tests.integration.conftest import NodeFactory, alice_and_away_bob, collect, wait_until_async
from tests.integration.test_gap_fetch import next_messages

DIRECT_CANARY = b"direct secret: my PIN is 4711"
GROUP_CANARY = b"group secret: launch is on friday"


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` whose bytes contain `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def direct_room(alice: Node, bob: Node) -> RoomId:
    """alice's direct room with bob, their nodes connected and bob's key bundles known."""
    await bob.connect(alice.listen_addrs[0])
    await alice.learn_home_record(bob.home_record())
    return await alice.open_direct(bob.user_id)


def session_of(envelope: Envelope) -> bytes:
    """The Megolm session id of an envelope as it went over the wire."""
    return e2ee.decode_encrypted_body(decode_envelope(envelope.wire).body).session_id


async def test_a_relay_holding_a_direct_message_for_an_away_member_never_reads_it(
    make_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with asyncio.timeout(40), make_node("relay") as relay:
        async with alice_and_away_bob(make_node, relay) as (alice, bob_id, room):
            sent = await alice.send(room, DIRECT_CANARY)
            assert sent.body == DIRECT_CANARY  # we see our own words
            on_wire = decode_envelope(sent.wire)
            assert on_wire.content_type == e2ee.ENCRYPTED_CONTENT_TYPE
            assert DIRECT_CANARY not in sent.wire
            await wait_until_async(lambda: relay.relay_held(bob_id), 2)  # the ROOM_KEY first
        async with make_node("bob") as bob:
            events = bob.events()
            arriving = asyncio.create_task(collect(events, MessageReceived, 1))
            await bob.connect(relay.listen_addrs[0])
            (received,) = await arriving
            assert received.envelope.message_id == sent.message_id
            assert received.envelope.body == DIRECT_CANARY
            stored = await bob.get_event(sent.message_id)
            assert stored is not None and stored.body == DIRECT_CANARY
    assert files_holding(tmp_path / "relay", DIRECT_CANARY) == []
    assert files_holding(tmp_path / "bob", DIRECT_CANARY), "bob's home keeps what it opened"
    assert not [r for r in caplog.records if DIRECT_CANARY.decode() in r.getMessage()]


async def test_a_stranger_on_the_groups_gossip_topic_reads_nothing_and_a_leaver_gets_no_new_key(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with (
        asyncio.timeout(60),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
        make_node("eve") as eve,
    ):
        for node in (bob, carol, eve):
            await node.connect(alice.listen_addrs[0])
        for node in (bob, carol):
            await alice.learn_home_record(node.home_record())
        room = await alice.create_group("launch", [bob.user_id, carol.user_id])
        # a stranger subscribes to the room's topic itself, as the attacker did
        eavesdrop = await eve._host.subscribe(room_topic(room))
        heard = asyncio.create_task(eavesdrop.get())
        bob_events, carol_events = bob.events(), carol.events()
        bob_gets = asyncio.create_task(next_messages(bob_events, 1))
        carol_gets = asyncio.create_task(next_messages(carol_events, 1))
        first = await alice.send(room, GROUP_CANARY)
        for got in (await bob_gets, await carol_gets):
            assert [m.body for m in got] == [GROUP_CANARY]
        resent = 0
        while not heard.done():  # until the topic's mesh reaches eve
            await alice.send(room, GROUP_CANARY)
            resent += 1
            await asyncio.wait([heard], timeout=0.3)
        assert GROUP_CANARY not in heard.result().data
        if resent:  # bob reads the resent canaries before the next phase waits on his events
            assert {m.body for m in await next_messages(bob_events, resent)} == {GROUP_CANARY}
        await eavesdrop.unsubscribe()

        await carol.leave(room)
        while carol.user_id in await alice.members(room):  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.02)
        bob_gets = asyncio.create_task(next_messages(bob_events, 1))
        later = await alice.send(room, b"after carol left")
        assert [m.body for m in await bob_gets] == [b"after carol left"]
        assert session_of(later) != session_of(first)  # SPEC §27.9: rotated on leaving
    assert files_holding(tmp_path / "eve", GROUP_CANARY) == []
    assert files_holding(tmp_path / "bob", GROUP_CANARY)
    assert files_holding(tmp_path / "carol", b"after carol left") == []


async def test_a_room_key_goes_first_and_is_never_shown_as_a_message(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        room = await direct_room(alice, bob)
        events = bob.events()
        arriving = asyncio.create_task(collect(events, MessageReceived, 2))
        sent = [await alice.send(room, f"m{i}".encode()) for i in range(2)]
        received = await arriving
        assert [e.envelope.body for e in received] == [b"m0", b"m1"]
        store = bob.store
        stored = await store.read(
            store.store.page_history, room, cursor=None, direction=Direction.FORWARD, limit=10
        )
        kinds = [e.envelope.kind for e in stored.events]
        assert kinds == [Kind.ROOM_KEY, Kind.MESSAGE, Kind.MESSAGE]  # one session, shared once
        assert session_of(sent[0]) == session_of(sent[1])
        shown = await bob.history(room)  # what an app is shown: no ROOM_KEY
        assert [e.envelope.body for e in shown.events] == [b"m0", b"m1"]
