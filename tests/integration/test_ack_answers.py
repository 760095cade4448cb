"""A home's answers to the batches we deliver (SPEC §11.3), from the hostile kit as that home:
an ERROR frame is a refusal and costs nothing, an answer that cannot be right (no ACK, an ACK
another node signed) is charged as a whole frame, and the batch is sent again until a right
ACK settles it."""

from __future__ import annotations

import asyncio
import os

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    AckStatus,
    Deliver,
    DeliveryResult,
    decode_frame,
    encode_ack,
    encode_error,
    sign_ack,
)
from hearthmesh.protocol.envelope import load_envelope
from hearthmesh.protocol.errors import Busy
from hearthmesh.protocol.identity import keypair_from_seed

from .conftest import UNFORGIVING, NodeFactory, node_and_kit, wait_until

pytestmark = pytest.mark.integration


async def test_an_ack_that_cannot_be_right_is_charged_and_a_refusal_is_not(
    make_node: NodeFactory,
) -> None:
    """Bob sends to the kit's user; the kit's home answers his batch with an ERROR frame
    (`BUSY`: not charged), then a frame that is no ACK (`MALFORMED`), then an ACK signed by
    another node's key (`BAD_SIGNATURE`), each charged as a whole frame (§11.6.1), then the
    right ACK: bob's points at each batch are noted as it comes."""
    async with (
        asyncio.timeout(60),
        node_and_kit(make_node, "bob") as (bob, kit),
    ):
        other = keypair_from_seed(os.urandom(32))
        points: list[int] = []

        async def serve(stream: FrameStream) -> None:
            async for data in stream:
                batch = decode_frame(data)
                assert isinstance(batch, Deliver)
                points.append(bob.peer_points(kit.peer_id))
                results = tuple(
                    DeliveryResult(
                        message_id=load_envelope(item.wire).message_id, status=AckStatus.STORED
                    )
                    for item in batch.items
                )
                answers = (
                    encode_error(Busy("later")),
                    encode_canonical([9, "no ack"]),
                    encode_ack(sign_ack(other, batch.batch_id, results)),
                    encode_ack(sign_ack(kit._node_key, batch.batch_id, results)),
                )
                await stream.write_frame(answers[min(len(points), len(answers)) - 1])

        kit.host.set_stream_handler(DELIVER_PROTOCOL, serve)
        peer = await kit.connect(bob.listen_addrs[0])
        await kit.announce_home(peer)
        await bob.send(await bob.open_direct(kit.user_id), b"to the kit")
        await wait_until(lambda: len(points) >= 4)
        frame = UNFORGIVING.frame_points
        assert points[:4] == [0, 0, frame, 2 * frame]
        await wait_until(lambda: bob.peer_points(kit.peer_id) == 2 * frame)
