"""Encryption keeps group commit (SPEC §27.8-§27.10, ARCHITECTURE §3 step 2): sends issued
together across Megolm rotations are encrypted with distinct (session, index) pairs, reach the
member opened, and share write batches, instead of one commit each behind the room's session.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import vodozemac

from hearthmesh.node.events import MessageReceived
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, decode_envelope
from hearthmesh.protocol.errors import LocalProtocolError
from tests.integration.conftest import NodeFactory, collect
from tests.integration.test_e2ee_canary import direct_room

SENDS = 250
ROTATE_AFTER = 100


async def test_concurrent_sends_across_rotations_share_commits_and_all_open(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(90), make_node("alice") as alice, make_node("bob") as bob:
        room = await direct_room(alice, bob)
        await alice.send(room, b"warm")  # the first session is started and shared
        events = bob.events()
        arriving = asyncio.create_task(collect(events, MessageReceived, SENDS + 1))
        batches_before = alice.store.batches_committed
        texts = [f"m{i}".encode() for i in range(SENDS)]
        sent = await asyncio.gather(*(alice.send(room, text) for text in texts))
        batches = alice.store.batches_committed - batches_before
        received = await arriving
        pairs = []
        for envelope in sorted(sent, key=lambda e: e.seq):
            body = e2ee.decode_encrypted_body(decode_envelope(envelope.wire).body)
            index = vodozemac.MegolmMessage.from_bytes(body.ciphertext).message_index()
            pairs.append((body.session_id, index))
        assert len(set(pairs)) == SENDS  # no Megolm index used twice
        for session in {session for session, _ in pairs}:  # sealed in the order encrypted
            indices = [index for s, index in pairs if s == session]
            assert indices == sorted(indices), indices
        sessions = Counter(session for session, _ in pairs)
        assert len(sessions) >= SENDS // ROTATE_AFTER  # rotated on the way
        assert sorted(e.envelope.body for e in received[1:]) == sorted(texts)
        # Each rotation costs one commit (the new session and its shares); the sends commit
        # together around them. Queued one by one behind a lock per room after each rotation,
        # they took a commit each (86 seen).
        assert batches < SENDS // 10, batches


async def test_a_send_too_large_to_encrypt_leaves_the_room_key_to_the_next(
    make_node: NodeFactory,
) -> None:
    """The send that started the session could not be encrypted: its ROOM_KEY never went out,
    so the next send carries it and bob opens that one."""
    async with asyncio.timeout(60), make_node("alice") as alice, make_node("bob") as bob:
        room = await direct_room(alice, bob)
        with pytest.raises(LocalProtocolError):
            await alice.send(room, b"x" * MAX_BODY_BYTES)
        arriving = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
        await alice.send(room, b"fits")
        assert [e.envelope.body for e in await arriving] == [b"fits"]
