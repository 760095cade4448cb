"""Our recent sends in hand (node/delivery/sent_in_hand.py): what a send committed is kept for
the receipts that will name it, within its bounds; what takes no receipt is not, and a recall
drops its target."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.node.node import Node
from hearthmesh.protocol.actions import RECALL_CONTENT_TYPE, Recall, encode_recall
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action
from hearthmesh.storage.store import KvStore
from tests.integration.conftest import node_config

from .test_inbox import ADMIN, MEMBER, OURS, PEER, arrival, change, make_inbox, receipt_of, sealed
from .test_inbox import store as store


def test_the_newest_sends_are_kept_within_the_count_and_the_bytes() -> None:
    sends = [sealed(OURS, n, body=bytes(100)) for n in range(1, 6)]
    size = len(sends[0].wire) + len(sends[0].body)
    kept = SentInHand(kept=3, max_bytes=10 * size)
    for envelope in sends:
        kept.sent(envelope)
    assert list(kept.envelopes) == [e.message_id for e in sends[-3:]]
    assert kept.size_bytes == 3 * size
    by_bytes = SentInHand(kept=10, max_bytes=2 * size)
    for envelope in sends:
        by_bytes.sent(envelope)
    assert list(by_bytes.envelopes) == [e.message_id for e in sends[-2:]]
    by_bytes.sent(receipt_of(MEMBER, 1, sends[0]))  # no receipt names a receipt
    by_bytes.recalled(sends[-1].message_id)
    assert list(by_bytes.envelopes) == [sends[-2].message_id]
    assert by_bytes.size_bytes == size


async def test_a_committed_send_is_in_hand_and_its_recall_drops_it(
    tmp_path: Path,
) -> None:
    other = UserId(bytes(range(32)))
    async with asyncio.timeout(10), Node(node_config(tmp_path / "a")) as node:
        room = await node.open_direct(other)
        message = await node.send(room, b"hello")
        sent = node._services.sent.envelopes
        assert sent[message.message_id] is message  # as our homes show it (opened)
        await node.send(
            room,
            encode_recall(Recall(target=message.message_id)),
            kind=Kind.RECALL,
            content_type=RECALL_CONTENT_TYPE,
            acts_on=message.message_id,
        )
        assert message.message_id not in sent


def test_a_recall_from_our_other_device_drops_its_target(store: KvStore) -> None:
    sent = SentInHand()
    inbox = make_inbox(sent=sent)
    setup = [change(1, Action.CREATE, ADMIN), change(2, Action.ADD, OURS)]
    ours = sealed(OURS, 1)
    inbox.accept(store, [arrival(e) for e in [*setup, ours]], now_ms=0, peer=PEER)
    sent.sent(ours)
    body = encode_recall(Recall(target=ours.message_id))
    recall = sealed(OURS, 2, kind=Kind.RECALL, body=body, content_type=RECALL_CONTENT_TYPE)
    outcome = inbox.accept(store, [arrival(recall)], now_ms=1, from_sibling=True)
    assert outcome.results[0].status is AckStatus.STORED
    assert ours.message_id not in sent.envelopes
