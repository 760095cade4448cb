"""The purge service runs with the node (SPEC §11.5.4): relay TTL and history retention."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.envelope import Envelope, Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory

pytestmark = pytest.mark.integration


async def test_a_running_node_drops_expired_relay_entries_and_old_history(
    make_node: NodeFactory,
) -> None:
    """Before, nothing called `Store.purge`: relayed envelopes and history stayed forever."""
    async with (
        asyncio.timeout(10),
        make_node(
            "bob",
            relay_ttl_ms=500,
            history_retention_ms=24 * 3600 * 1000,
            purge_interval_ms=50,
        ) as bob,
        HostilePeer() as mallory,
    ):
        await mallory.connect(bob.listen_addrs[0])
        sender = mallory.user_id
        away = UserId(hashlib.sha256(b"someone away").digest())

        def message(to: UserId, wall_ms: int) -> Envelope:
            room = direct_room_id(sender, to)
            return mallory.forge.seal(Kind.MESSAGE, room, b"hi", now_ms=wall_ms)

        # one for bob, stamped two days ago; one held for a user who lives elsewhere
        old = message(bob.user_id, 1_000)
        held = message(away, 2_000)
        items = [BatchItem(0, bob.user_id, old.wire), BatchItem(0, away, held.wire)]
        assert await mallory.deliver(bob.peer_id, items) == ["STORED", "RELAYED"]
        old_id = old.message_id
        store = bob.store
        while await bob.get_event(old_id) is not None:  # noqa: ASYNC110 - store state, no event
            await asyncio.sleep(0.02)
        while await store.run(store.store.relay_recipients):  # noqa: ASYNC110 - likewise
            await asyncio.sleep(0.02)
