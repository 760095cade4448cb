"""The peer's answers on a verification flow our user started (node/identity/verification.py,
SPEC §29.4.1, §11.6.1): a real node and its API, the kit answering its START as scripted."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.errors import ErrorCode, HearthError
from hearthmesh.protocol.framing import MAX_FRAME_BYTES
from hearthmesh.protocol.identity import user_id_text
from hearthmesh.protocol.verification import (
    VERIFY_PROTOCOL,
    Accept,
    Cancel,
    Start,
    VerifyState,
    decode_verify_frame,
    encode_verify_frame,
)
from hearthmesh.tools.conformance.cases.shared import greet_node
from hearthmesh.tools.hostile.peer import HostilePeer

from .api_helpers import Home, home
from .conftest import UNFORGIVING, wait_until

pytestmark = pytest.mark.integration

Answer = Callable[[Start, HostilePeer], bytes]
"""The bytes the kit writes on the flow's stream after the node's START."""


def _cancel(start: Start, kit: HostilePeer) -> bytes:
    frame = Cancel(flow=start.flow, code=ErrorCode.VERIFICATION_CANCELLED, reason="no")
    return _framed(encode_verify_frame(frame))


def _garbage(start: Start, kit: HostilePeer) -> bytes:
    return _framed(b"\xa1garbage")


def _another_device(start: Start, kit: HostilePeer) -> bytes:
    accept = Accept(flow=start.flow, user=kit.user_id, device=b"d" * 32, commitment=b"c" * 32)
    return _framed(encode_verify_frame(accept))


def _oversized(start: Start, kit: HostilePeer) -> bytes:
    return struct.pack(">I", MAX_FRAME_BYTES + 1) + b"\0" * 64


def _framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def _started_and_answered(h: Home, kit: HostilePeer, answer: Answer) -> VerifyState:
    """Our user starts verifying the kit's user; the kit answers the START with `answer`.
    The flow's state once it ended (or the node stopped reading: a flow not ended in 10 s)."""

    async def respond(stream: FrameStream) -> None:
        start = decode_verify_frame(await stream.read_frame())
        assert isinstance(start, Start)
        await stream.write_bytes(answer(start, kit))
        try:
            while await stream.read_bytes():  # until the node ends the stream
                pass
        except HearthError:
            pass

    kit.host.set_stream_handler(VERIFY_PROTOCOL, respond)
    body = {"user_id": user_id_text(kit.user_id), "peer_id": kit.peer_id}
    flow_id = bytes.fromhex((await h.client.call("POST", "/v1/verifications", body))["flow_id"])
    machine = h.node.verification.flow(flow_id).machine
    ended = (VerifyState.CANCELLED, VerifyState.DONE)
    try:
        async with asyncio.timeout(10):
            await wait_until(lambda: machine.state in ended)
    except TimeoutError:
        pass
    return machine.state


async def test_an_answer_to_our_users_flow_that_cannot_be_right_is_charged_a_cancel_is_not(
    tmp_path: Path,
) -> None:
    """SPEC §29.4.1, §11.6.1: on a flow our user started, the peer's CANCEL ends it at no
    cost; a frame that is no verify frame, an ACCEPT naming a device its user's record does
    not put on that peer, and a frame over the frame limit each end it and cost the peer a
    whole frame (25 points). Each flow ends (one per peer at a time), and the node still
    starts the next one."""
    async with (
        asyncio.timeout(60),
        home(tmp_path / "a", standing=UNFORGIVING) as a,
        HostilePeer() as kit,
    ):
        await kit.connect(a.node.listen_addrs[0])
        await greet_node(kit, a.node.peer_id)  # the node holds our record, naming this peer
        seen = []
        for answer in (_cancel, _garbage, _another_device, _oversized, _cancel):
            state = await _started_and_answered(a, kit, answer)
            seen.append((answer.__name__, state.value, a.node.peer_points(kit.peer_id)))
        assert seen == [
            ("_cancel", "cancelled", 0),
            ("_garbage", "cancelled", 25),
            ("_another_device", "cancelled", 50),
            ("_oversized", "cancelled", 75),
            ("_cancel", "cancelled", 75),
        ]
