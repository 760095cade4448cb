"""What a home deferred comes due again once it stores a later batch of ours (SPEC §11.5.1),
with a real home on 127.0.0.1 and the hostile kit posing as the other: mallory's home defers
bob's first message until its backoff has grown to seconds, then stores what comes; bob's next
message is stored, and the first is sent again at once, not a backoff later.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from hearthmesh.protocol import deferred_rows
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.envelope import MessageId, load_envelope
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer

from .conftest import NodeFactory, wait_until

pytestmark = pytest.mark.integration


async def _taken(trap: DeliveryTrap, message_id: MessageId, after: int) -> list[MessageId]:
    """Until `trap` took `message_id` after its first `after` envelopes (the caller's timeout
    bounds it): the ids it took, in order."""
    while message_id not in (ids := [load_envelope(w).message_id for w in trap.wires])[after:]:
        trap.got_one.clear()
        await trap.got_one.wait()
    return ids


async def test_a_deferred_message_is_sent_again_once_its_home_stores_a_later_one(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # not the 2 s after the last deferral: when is tested apart (tests/protocol/test_outbox.py)
    monkeypatch.setattr(deferred_rows, "DEFERRED_AGAIN_MS", 0)
    caplog.set_level(logging.INFO, logger="hearthmesh.node.delivery.outbox")
    async with asyncio.timeout(30), make_node("bob") as bob, HostilePeer() as mallory:
        await mallory.connect(bob.listen_addrs[0])
        trap = mallory.catch_deliveries(AckStatus.DEFERRED)
        await mallory.announce_home(bob.peer_id)  # bob takes us for mallory's home
        room = await bob.open_direct(mallory.user_id)
        first = await bob.send(room, b"first")
        # deferred until its next try is more than 5 s away (`outage_probe_max_ms`, logged)
        await wait_until(lambda: any("s (deferred by" in r.getMessage() for r in caplog.records))
        trap.status, deferred = AckStatus.STORED, len(trap.wires)
        second = await bob.send(room, b"second")
        ids = (await _taken(trap, first.message_id, deferred))[deferred:]
        assert ids[0] == second.message_id  # the first came after the second was stored ...
        assert any("due now" in r.getMessage() for r in caplog.records)  # ... because it was
        assert bob.deferred_due_again == 1  # the rule's count, as the status shows it
