"""A stranger cannot fill a relay (SPEC §11.5.3): real node, real libp2p host, real LMDB."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, Kind, RoomId
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory

pytestmark = pytest.mark.integration

ENVELOPES = 330
PER_BATCH = 8
"""Eight envelopes of 64 KiB stay under the 1 MiB frame limit."""


def _data_bytes(path: os.PathLike[str]) -> int:
    return sum(entry.stat().st_blocks * 512 for entry in os.scandir(path))


async def test_a_stranger_flooding_random_recipients_is_bounded_and_banned(
    make_node: NodeFactory,
) -> None:
    """The finding: 330 envelopes of 64 KiB to 330 made-up recipients were all RELAYED, the
    store grew by 22 MiB, and the sender was never charged. Now the strangers' share of one
    peer bounds what is held, each batch past it costs points, and the flood ends in a ban."""
    async with (
        asyncio.timeout(30),
        make_node("relay") as relay,
        HostilePeer() as mallory,
    ):
        store_dir = relay.config.data_dir / "store"
        before = _data_bytes(store_dir)
        await mallory.connect(relay.listen_addrs[0])
        envelopes = [
            mallory.forge.seal(
                Kind.MESSAGE,
                RoomId(hashlib.sha256(b"room %d" % i).digest()),
                os.urandom(MAX_BODY_BYTES),
                now_ms=1_000 + i,
            )
            for i in range(ENVELOPES)
        ]
        statuses: list[str] = []
        banned_at = None
        for start in range(0, ENVELOPES, PER_BATCH):
            items = [
                BatchItem(0, hashlib.sha256(b"nobody %d" % i).digest(), env.wire)
                for i, env in enumerate(envelopes[start : start + PER_BATCH], start)
            ]
            outcomes = await mallory.deliver(relay.peer_id, items)
            if outcomes[0] in ("refused", "closed"):  # reset unread, or disconnected: banned
                banned_at = start
                break
            statuses += outcomes
        relayed = statuses.count("RELAYED")
        over = statuses.count("DEFERRED:QUOTA_EXCEEDED")
        assert relayed + over == len(statuses)
        # The strangers' share of one peer: 4 MiB of 64 KiB envelopes.
        assert 0 < relayed <= (4 << 20) // MAX_BODY_BYTES
        assert over > 0 and banned_at is not None and relay.is_banned(mallory.peer_id)
        assert _data_bytes(store_dir) - before < 8 << 20
