"""A member added while one of our sends waits (SPEC §27.10.1, §20.6): the send read the
room's members before the addition and seals after it, in history after the member's ADD, so
the new member must be able to read it. Real nodes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import Kind, RoomId

from .conftest import NodeFactory
from .test_devices import bodies, wait_until_readable
from .test_key_requests import until_messages

pytestmark = pytest.mark.integration

FAST_ASKS = {"key_request_interval_ms": 200}
"""Carol's home asks for a held session's key within a few tenths of a second."""


@asynccontextmanager
async def alice_bob_then_carol(make_node: NodeFactory) -> AsyncIterator[tuple[Node, Node, RoomId]]:
    """Alice's group with bob, her session ready and its key with bob's device (a send then
    awaits nothing before its seal); carol's home is connected to alice's (alice holds her
    record), not yet a member."""
    async with (
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol", **FAST_ASKS) as carol,
    ):
        await bob.connect(alice.listen_addrs[0])
        await carol.connect(alice.listen_addrs[0])
        room = await alice.create_group("late", [bob.user_id])
        await alice.send(room, b"before carol")
        yield alice, carol, room


async def test_a_member_added_while_a_send_waits_its_turn_reads_that_send(
    make_node: NodeFactory,
) -> None:
    """Alice's group has bob, and her session's key is with bob's device. A send of hers reads
    the members (alice, bob) and waits for its turn behind a send accepted before it (held
    here, as a client's send awaiting a blob's seal holds it); meanwhile alice adds carol. The
    waiting send seals after carol's ADD (a later sequence number and HLC), so it is carol's
    to read. On main it was encrypted and queued for alice's and bob's homes alone and carol's
    device got the session from the next message's index: carol's home did not get it within
    the test's 90 s, and fetched (as a gap) it could never have opened it, her key request
    answered from that later index."""
    async with asyncio.timeout(90), alice_bob_then_carol(make_node) as (alice, carol, room):
        with alice.take_turn(room) as earlier:
            waiting = asyncio.create_task(alice.send(room, b"sent as carol joined"))
            await asyncio.sleep(0)  # it reads the members, then waits for its turn
            await alice.add_member(room, carol.user_id)
            assert not waiting.done()
            earlier.release()
            joined = await waiting
        events = (await alice.history(room, limit=1000)).events
        add = [e.envelope for e in events if e.envelope.kind is Kind.MEMBERSHIP][-1]
        assert (add.seq, add.hlc) < (joined.seq, joined.hlc)
        await alice.send(room, b"after carol")
        await until_messages(carol, room, 2)
        await wait_until_readable(carol, room)
        held = await bodies(carol, room)
        assert b"sent as carol joined" in held and b"after carol" in held
        assert b"before carol" not in held
        assert carol.undecryptable == 0


async def test_a_send_sealed_while_our_add_of_a_member_commits_is_that_members_to_read(
    make_node: NodeFactory,
) -> None:
    """The ADD takes its sequence number when sealed and is folded into the room's members by
    its commit (with carol's welcome, on the store's writer thread): a send sealed between
    the two comes after it in history, so carol must read it too. On main it was encrypted
    for alice and bob (the fold not done yet) and never reached carol's home."""
    async with asyncio.timeout(90), alice_bob_then_carol(make_node) as (alice, carol, room):
        # Our next sequence number in the room moves when the ADD is sealed; its commit is
        # queued in the same step and runs from the next loop iteration on. (Outgoing's own
        # state: nothing public tells of a seal before its commit.)
        next_seq = alice._services.outgoing._next_seq
        sealed_before = next_seq[room]
        adding = asyncio.create_task(alice.add_member(room, carol.user_id))
        while next_seq[room] == sealed_before:  # noqa: ASYNC110 - a number, no event
            await asyncio.sleep(0)
        # Called now, the send seals before the ADD's commit can start (it awaits nothing
        # before its seal on main).
        joined = await alice.send(room, b"sealed as carol's ADD commits")
        await adding
        add = [
            e.envelope
            for e in (await alice.history(room, limit=1000)).events
            if e.envelope.kind is Kind.MEMBERSHIP
        ][-1]
        assert add.seq < joined.seq
        await alice.send(room, b"after carol")
        await until_messages(carol, room, 2)
        await wait_until_readable(carol, room)
        held = await bodies(carol, room)
        assert b"sealed as carol's ADD commits" in held and b"after carol" in held
        assert carol.undecryptable == 0
