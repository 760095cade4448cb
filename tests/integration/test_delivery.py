"""Guaranteed delivery between real nodes on 127.0.0.1 (ARCHITECTURE §3, SPEC §11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from hearthmesh.node.events import Logged, MessageReceived, NodeEvent
from hearthmesh.protocol import outbox as outbox_machine
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Direction, RelayQuota
from hearthmesh.storage.lmdb_store import LmdbStore

from .conftest import (
    NodeFactory,
    acks_of,
    alice_and_away_bob,
    collect,
    free_port,
    spawn_node,
    wait_until,
    wait_until_async,
)
from .test_gap_fetch import next_messages

pytestmark = pytest.mark.integration


async def test_two_nodes_exactly_once_in_order(make_node: NodeFactory) -> None:
    async with asyncio.timeout(20), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        bob_events = bob.events()
        alice_events = alice.events()
        receiving = asyncio.create_task(collect(bob_events, MessageReceived, 30))
        sent = [await alice.send(room, f"hello {i}".encode()) for i in range(30)]
        received = await receiving
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        assert {e.recipient for e in await acks_of(alice_events, sent)} == {bob.user_id}
        page = await bob.history(room, limit=100)
        assert [e.envelope.body for e in page.events] == [e.body for e in sent]


async def _through_messages(events: AsyncIterator[NodeEvent], count: int) -> list[NodeEvent]:
    """Every event up to and with the `count`-th `MessageReceived`."""
    seen: list[NodeEvent] = []
    async for event in events:
        seen.append(event)
        if sum(isinstance(e, MessageReceived) for e in seen) == count:
            break
    return seen


def _logged_ids(events: list[NodeEvent]) -> list[bytes]:
    return [
        entry.event.envelope.message_id
        for event in events
        if isinstance(event, Logged)
        for entry in event.entries or ()
    ]


async def test_a_batchs_log_entries_are_built_only_while_a_subscriber_asks(
    make_node: NodeFactory,
) -> None:
    """`Logged` (the arrival-log entries a client feed publishes from) costs a node with no
    feed nothing: no subscriber asked, none is emitted. While one asks (`events(logged=True)`,
    the API's pump) each arriving batch tells its entries, in log order, before its messages;
    once it has gone, none again."""
    async with asyncio.timeout(20), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        plain = bob.events()
        first = [await alice.send(room, f"a{i}".encode()) for i in range(3)]
        assert _logged_ids(await _through_messages(plain, 3)) == []
        feed = bob.events(logged=True)
        told = asyncio.create_task(_through_messages(feed, 3))
        sent = [await alice.send(room, f"b{i}".encode()) for i in range(3)]
        got = await told
        ids = [e.message_id for e in sent]
        assert [i for i in _logged_ids(got) if i in ids] == ids
        assert _logged_ids(await _through_messages(plain, 3))  # every subscriber gets them
        assert isinstance(feed, AsyncGenerator)
        await feed.aclose()
        later = [await alice.send(room, f"c{i}".encode()) for i in range(3)]
        assert _logged_ids(await _through_messages(plain, 3)) == []
        page = await bob.history(room, limit=100)
        messages = [e.envelope.body for e in page.events if e.envelope.kind is Kind.MESSAGE]
        assert messages == [e.body for e in [*first, *sent, *later]]


@pytest.mark.slow
async def test_kill_9_recipient_loses_nothing(make_node: NodeFactory, tmp_path: Path) -> None:
    """Every message alice's node acknowledged as sent reaches bob exactly once, in order,
    although bob's node is killed with SIGKILL in the middle of the stream."""
    # Two node processes start: each imports libp2p, 1-2 s quiet and over 15 s at load 20.
    async with asyncio.timeout(90), make_node("alice") as alice:
        port, bob_dir = free_port(), tmp_path / "bob"
        bob = await spawn_node(bob_dir, port)
        try:
            await alice.connect(bob.addr)
            room = await alice.open_direct(UserId(bob.user_id))
            sent = [await alice.send(room, f"m{i}".encode()) for i in range(100)]
            await bob.kill()
            sent += [await alice.send(room, f"m{i}".encode()) for i in range(100, 200)]
            bob = await spawn_node(bob_dir, port, connect=(alice.listen_addrs[0],))
            keys = 2  # ROOM_KEYs: a new Megolm session every 100 messages (SPEC §27.9)
            await wait_until(lambda: alice.outbox_delivered >= len(sent) + keys)
        finally:
            assert await bob.terminate() == 0
        store = LmdbStore(bob_dir / "store")
        try:
            page = store.page_history(room, cursor=None, direction=Direction.FORWARD, limit=1000)
        finally:
            store.close()
        messages = [e.envelope.message_id for e in page.events if e.envelope.kind is Kind.MESSAGE]
        assert messages == [e.message_id for e in sent]


async def test_relay_stores_and_forwards(make_node: NodeFactory) -> None:
    """Bob's home is away: a relay holds alice's messages and hands them over when bob returns,
    after alice's node has gone."""
    async with asyncio.timeout(30), make_node("relay") as relay:
        async with alice_and_away_bob(make_node, relay) as (alice, bob_id, room):
            sent = [await alice.send(room, f"r{i}".encode()) for i in range(10)]
            # all of it held before alice goes: her ROOM_KEY went first (SPEC §27.5)
            await wait_until_async(lambda: relay.relay_held(bob_id), len(sent) + 1)
        async with make_node("bob") as bob:
            events = bob.events()
            arriving = asyncio.create_task(collect(events, MessageReceived, 10))
            await bob.connect(relay.listen_addrs[0])
            received = await arriving
            assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
            # the relay drops what bob's ack names, just after bob's commit told his app
            while await relay.relay_held(bob_id):  # noqa: ASYNC110 - a store count, no event
                await asyncio.sleep(0.02)


async def test_relay_quota_keeps_outbox(make_node: NodeFactory) -> None:
    """A relay over quota defers; alice keeps every entry and delivers directly later."""
    quota = RelayQuota(max_count=3, max_bytes=1 << 20)
    async with asyncio.timeout(30), make_node("relay", relay_quota=quota) as relay:
        async with make_node("bob") as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        async with make_node("alice") as alice:
            await alice.connect(relay.listen_addrs[0])
            await alice.learn_home_record(bob_record)
            room = await alice.open_direct(bob_id)
            sent = [await alice.send(room, f"q{i}".encode()) for i in range(8)]
            await wait_until_async(lambda: relay.relay_held(bob_id), 3)
            assert alice.outbox_delivered == 0
            async with make_node("bob") as bob:
                events = bob.events()
                arriving = asyncio.create_task(collect(events, MessageReceived, 8))
                await bob.connect(alice.listen_addrs[0])
                received = await arriving
                assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
                await wait_until(lambda: alice.outbox_delivered == len(sent) + 1)  # + ROOM_KEY


async def test_a_relay_that_is_a_member_too_holds_the_copy_for_the_absent_member(
    make_node: NodeFactory,
) -> None:
    """Carol's node stores alice's group messages as a member and must still hold bob's copies
    as his relay (not answer DUPLICATE): bob gets them from carol after alice has gone."""
    async with asyncio.timeout(40), make_node("carol") as carol:
        async with make_node("bob") as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        async with make_node("alice") as alice:
            await alice.connect(carol.listen_addrs[0])
            await alice.learn_home_record(bob_record)
            room = await alice.create_group("trip", [bob_id, carol.user_id])
            sent = [await alice.send(room, f"g{i}".encode()) for i in range(5)]
            await wait_until(lambda: alice.outbox_delivered >= len(sent))  # carol's copies
            await wait_until_async(lambda: carol.relay_held(bob_id), len(sent) + 1)  # + ROOM_KEY
        async with make_node("bob") as bob:
            arriving = asyncio.create_task(next_messages(bob.events(), len(sent)))
            await bob.connect(carol.listen_addrs[0])
            received = await arriving
            assert [e.message_id for e in received] == [e.message_id for e in sent]


async def test_a_down_homes_entries_wait_parked_and_go_when_it_connects(
    make_node: NodeFactory,
) -> None:
    """SPEC §11.5.2: bob's home is away, so alice's node parks what it has for him (it does not
    retry each entry), keeps it parked across a restart, and sends it all, in order, as soon as
    bob's home connects. The wiring on real nodes; the timing is
    tests/protocol/test_outbox.py's clocked test of the same name."""
    async with asyncio.timeout(40):
        async with make_node("bob") as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        async with make_node("alice") as alice:
            await alice.learn_home_record(bob_record)
            room = await alice.open_direct(bob_id)
            sent = [await alice.send(room, f"p{i}".encode()) for i in range(40)]
            store = alice.store
            await wait_until_async(
                lambda: store.read(lambda: len(store.store.parked_destinations())), 1
            )
            assert alice.outbox_delivered == 0
        async with make_node("alice") as alice:  # restarted: the parked entries wait on
            async with make_node("bob") as bob:
                arriving = asyncio.create_task(next_messages(bob.events(), len(sent)))
                await bob.connect(alice.listen_addrs[0])
                received = await arriving
                assert [e.message_id for e in received] == [e.message_id for e in sent]
                await wait_until(lambda: alice.outbox_delivered == len(sent) + 1)  # + ROOM_KEY
            assert await alice.store.read(alice.store.store.parked_destinations) == []


async def test_a_full_hand_takes_more_as_soon_as_a_batch_is_delivered(
    make_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox stops taking stored entries while it holds MAX_HELD_ENTRIES; each batch
    delivered then makes room, and the loop takes more at once, not at its next poll (here a
    minute away). Everything reaches bob in order."""
    # The production ratios (a hand of several batches, 4 hands to send) at a quarter of the
    # size: 300 sends instead of 1,200, each one a commit.
    monkeypatch.setattr(outbox_machine, "MAX_HELD_ENTRIES", 75)
    monkeypatch.setattr(outbox_machine, "BATCH_ENTRIES", 64)
    bob_at = (f"/ip4/127.0.0.1/tcp/{free_port()}",)
    async with asyncio.timeout(30):  # half the poll: only the wake-ups can finish in time
        async with make_node("bob", listen_addrs=bob_at) as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        async with make_node("alice") as alice:  # bob is away: everything waits stored
            await alice.learn_home_record(bob_record)
            room = await alice.open_direct(bob_id)
            sent = [await alice.send(room, f"m{i}".encode()) for i in range(300)]
        with LmdbStore(tmp_path / "alice" / "store") as store:  # as if every lease ran out
            # every stored event of the room: the messages and the ROOM_KEYs of their sessions
            page = store.page_history(room, cursor=None, direction=Direction.FORWARD, limit=1000)
            stored = [e.envelope.message_id for e in page.events]
            assert len(stored) > len(sent)
            store.enqueue_many(bytes(bob_id), [(message_id, 0) for message_id in stored])
        async with make_node("bob", listen_addrs=bob_at) as bob:
            arriving = asyncio.create_task(next_messages(bob.events(), len(sent)))
            async with make_node("alice", retry_poll_ms=60_000):
                received = await arriving
            assert [e.message_id for e in received] == [e.message_id for e in sent]


async def test_an_idle_outbox_is_not_polled_at_its_first_interval(make_node: NodeFactory) -> None:
    """With nothing due, the worker sleeps until the store's next due entry or a wake, and its
    backstop look backs off from `retry_poll_ms` (50 ms here) to 30 s: an idle node made some
    15 write batches a second for looks that found nothing. Counted, not timed: a loaded
    machine makes fewer looks, never more."""
    async with asyncio.timeout(20), make_node("idle") as node:
        await asyncio.sleep(1)  # the start's writes, and the first backed-off looks
        before = node.store.batches_committed
        await asyncio.sleep(2)
        assert node.store.batches_committed - before <= 4
