"""The capability level `owed-held` (SPEC §27.11.3, §20.5), with real homes on 127.0.0.1.

alice sends carol three messages before she holds carol's record, so her session owes carol
its key from index 0 (§27.10.1). Once carol's home says hello, alice's next send would give
carol's device the session at index 3: a home of a release before the hold (§27.11.2) would
then refuse the three earlier envelopes, and alice's outbox would drop them. When carol's home
does not advertise `owed-held` (withheld, as a mixed-version mesh has it, §20.7) that send
starts a new session instead, and the first one never goes to carol's device in a ROOM_KEY;
when it does, the send goes on in the session, at no rotation's cost. Either way carol reads
every message she was sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Envelope, RoomId, decode_envelope
from hearthmesh.protocol.identity import UserId

from .conftest import NodeFactory
from .test_devices import bodies, wait_until_readable
from .test_key_requests import until_messages

pytestmark = pytest.mark.integration

_QUIET = {"share_presence": False}


def _session(envelope: Envelope) -> bytes:
    """The Megolm session an encrypted envelope of ours was sealed with (its wire's body)."""
    return e2ee.decode_encrypted_body(decode_envelope(envelope.wire).body).session_id


async def _owed_then_shared(
    make_node: NodeFactory, tmp_path: Path, withheld: frozenset[Level]
) -> tuple[list[bytes], bool]:
    """alice's five messages to carol (three before she knows carol's record, two after):
    the session of each, and whether alice's first session went to carol's device. Returns
    once carol reads all five."""
    texts = [b"owed %d" % i for i in range(3)] + [b"shared %d" % i for i in range(2)]
    async with (
        make_node("alice", **_QUIET) as alice,
        make_node("carol", withheld_levels=withheld, **_QUIET) as carol,
    ):
        room = await alice.open_direct(carol.user_id)
        sent = [await alice.send(room, text) for text in texts[:3]]
        await carol.connect(alice.listen_addrs[0])  # hello: alice learns carol's record
        await until_messages(carol, room, 3)
        sent += [await alice.send(room, text) for text in texts[3:]]
        await until_messages(carol, room, 5)
        await wait_until_readable(carol, room)
        assert texts == [b for b in await bodies(carol, room) if b in texts]
        sessions = [_session(envelope) for envelope in sent]
        went_to_carol = await _went_to(alice, room, sessions[0], carol.user_id)
    return sessions, went_to_carol


async def _went_to(node: Node, room: RoomId, session: bytes, user: UserId) -> bool:
    shared = await node.store.read(node.store.store.shared_devices, room, session)
    return user in shared.values()


async def test_a_home_that_withholds_owed_held_gets_a_new_session_and_reads_what_it_was_owed(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """carol's home withholds `owed-held`: alice's fourth send, the first to reach carol's
    device, starts a new session (the fifth stays in it); the first session never goes to
    carol's device, so her home holds the three owed envelopes, asks alice for their key and
    reads them (§27.11.3, §27.13.1)."""
    async with asyncio.timeout(90):
        sessions, went = await _owed_then_shared(make_node, tmp_path, frozenset({Level.OWED_HELD}))
    assert len(set(sessions[:3])) == 1 and sessions[3] == sessions[4] != sessions[0]
    assert not went


async def test_a_home_that_advertises_owed_held_costs_no_rotation(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """carol's home advertises `owed-held`: all five messages share one session, given to
    carol's device at index 3; her home holds the three older ones and reads them (§27.11.2)."""
    async with asyncio.timeout(90):
        sessions, went = await _owed_then_shared(make_node, tmp_path, frozenset())
    assert len(set(sessions)) == 1
    assert went
