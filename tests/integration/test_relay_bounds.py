"""A stranger cannot fill a relay (SPEC §11.5.3): real node, real libp2p host, real LMDB."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from hearthmesh.node.libp2p_host import HostConfig, P2PHost
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    AckStatus,
    BatchItem,
    decode_frame,
    encode_deliver,
)
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, Kind, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode, HearthError
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)

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
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        store_dir = relay.config.data_dir / "store"
        before = _data_bytes(store_dir)
        await mallory.connect(relay.listen_addrs[0])
        user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
        cert = encode_certificate(issue_certificate(user, DeviceId(device.public), created_ms=0))
        envelopes = [
            seal(
                device,
                kind=Kind.MESSAGE,
                room=RoomId(hashlib.sha256(b"room %d" % i).digest()),
                sender_user=UserId(user.public),
                seq=i + 1,
                hlc=Timestamp(wall_ms=1_000 + i, counter=0),
                content_type="text/plain",
                body=os.urandom(MAX_BODY_BYTES),
            )
            for i in range(ENVELOPES)
        ]
        statuses: list[tuple[AckStatus, int]] = []
        banned_at = None
        for start in range(0, ENVELOPES, PER_BATCH):
            items = [
                BatchItem(0, hashlib.sha256(b"nobody %d" % i).digest(), env.wire)
                for i, env in enumerate(envelopes[start : start + PER_BATCH], start)
            ]
            try:
                stream = await mallory.open_stream(relay.peer_id, DELIVER_PROTOCOL)
                await stream.write_frame(encode_deliver(start + 1, [cert], items))
                ack = decode_frame(await stream.read_frame())
            except HearthError:  # reset unread, or disconnected: banned
                banned_at = start
                break
            assert isinstance(ack, Ack)
            statuses += [(r.status, r.code) for r in ack.results]
        relayed = statuses.count((AckStatus.RELAYED, 0))
        over = statuses.count((AckStatus.DEFERRED, int(ErrorCode.QUOTA_EXCEEDED)))
        assert relayed + over == len(statuses)
        # The strangers' share of one peer: 4 MiB of 64 KiB envelopes.
        assert 0 < relayed <= (4 << 20) // MAX_BODY_BYTES
        assert over > 0 and banned_at is not None and relay.is_banned(mallory.peer_id)
        assert _data_bytes(store_dir) - before < 8 << 20
