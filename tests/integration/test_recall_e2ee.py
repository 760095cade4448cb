"""A recall is end-to-end encrypted like every action (SPEC §27.3.1, §31.1.1): the relay that
holds a direct message and its recall for an away member forwards both without reading which
message is recalled, and the member's home, back, opens the recall and purges the body and its
plaintext."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.actions import RECALL_CONTENT_TYPE, Recall, encode_recall
from hearthmesh.protocol.envelope import Kind, decode_envelope
from tests.integration.conftest import NodeFactory, alice_and_away_bob, wait_until_async


async def test_a_relay_forwards_a_recall_it_cannot_read_and_the_home_purges_the_body(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(60), make_node("relay") as relay:
        async with alice_and_away_bob(make_node, relay) as (alice, bob_id, room):
            sent = await alice.send(room, b"sent to the wrong person")
            recall = await alice.send(
                room,
                encode_recall(Recall(target=sent.message_id)),
                content_type=RECALL_CONTENT_TYPE,
                kind=Kind.RECALL,
                acts_on=sent.message_id,
            )
            on_wire = decode_envelope(recall.wire)
            assert on_wire.kind is Kind.RECALL  # what a relay sees: the kind, not the target
            assert on_wire.content_type == e2ee.ENCRYPTED_CONTENT_TYPE
            assert bytes(sent.message_id) not in on_wire.body
            await wait_until_async(lambda: relay.relay_held(bob_id), 3)  # ROOM_KEY first
        async with make_node("bob") as bob:
            await bob.connect(relay.listen_addrs[0])
            while await bob.get_event(recall.message_id) is None:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.02)
            # the recall opened at bob's home, and the body goes (with what it opened to)
            while await bob.get_event(sent.message_id) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            store = bob.store
            assert await store.read(store.store.plaintext, sent.message_id) is None
            assert await store.read(store.store.withdrawn_by, sent.message_id) == alice.user_id
