"""Gaps in a sender's sequence are fetched from other homes, not waited for (SPEC §26)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.delivery.fetch import REQUESTS_BURST, REQUESTS_PER_S
from hearthmesh.node.events import MessageReceived, NodeEvent
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    AckStatus,
    BatchItem,
    ProtocolErrorFrame,
    decode_frame,
    encode_deliver,
    encode_error,
)
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import ErrorCode, NotFound
from hearthmesh.protocol.fetch import (
    FETCH_PROTOCOL,
    FetchRequest,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.protocol.rooms import direct_room_id
from tests.conftest import FakeClock

from .conftest import (
    CATALOGUE_STANDING,
    UNFORGIVING,
    NodeFactory,
    node_and_kit,
    node_config,
    wait_until,
)
from .test_mesh import wait_until_members

pytestmark = pytest.mark.integration

GRACE_MS = 300


async def next_messages(events: AsyncIterator[NodeEvent], count: int) -> list[Envelope]:
    """The next `count` MESSAGE envelopes released to the app (other events skipped)."""
    found: list[Envelope] = []
    async for event in events:
        if isinstance(event, MessageReceived) and event.envelope.kind is Kind.MESSAGE:
            found.append(event.envelope)
            if len(found) == count:
                break
    return found


async def released_from(
    events: AsyncIterator[NodeEvent], device: bytes, count: int
) -> list[Envelope]:
    """The next `count` envelopes of `device` released to the app (others skipped)."""
    found: list[Envelope] = []
    async for event in events:
        if isinstance(event, MessageReceived) and event.envelope.sender_device == device:
            found.append(event.envelope)
            if len(found) == count:
                break
    return found


@pytest.mark.slow
async def test_a_gap_left_by_a_sender_that_went_away_is_fetched_from_another_member(
    make_node: NodeFactory,
) -> None:
    """Alice adds dave and erin to the group and welcomes them while carol's node is down; bob
    gets all three. Alice's node stops before carol's returns, and only the welcome reaches
    carol (gossip or a relay's deliver stream; membership goes by the guaranteed path only).
    That leaves a gap, which carol fills from bob's history: she gets all three in order,
    exactly once, and folds the new members in."""
    dave, erin = (UserId(keypair_from_seed(os.urandom(32)).public) for _ in range(2))
    async with asyncio.timeout(40), make_node("bob", gap_grace_ms=GRACE_MS) as bob:
        async with make_node("alice") as alice:
            async with make_node("carol", gap_grace_ms=GRACE_MS) as carol:
                await alice.connect(bob.listen_addrs[0])
                await carol.connect(bob.listen_addrs[0])
                await carol.connect(alice.listen_addrs[0])
                group = await alice.create_group("three", [bob.user_id, carol.user_id])
                members = {alice.user_id, bob.user_id, carol.user_id}
                for node in (alice, bob, carol):
                    await wait_until_members(node, group, members)
                arriving = asyncio.create_task(next_messages(carol.events(), 1))
                await alice.send(group, b"before")
                await arriving
            carol_id = carol.user_id
            await alice.add_member(group, dave)
            await alice.add_member(group, erin)
            await alice.send(group, b"welcome, dave and erin")
            sent = [e.envelope for e in (await alice.history(group, limit=3)).events]
            for envelope in sent:
                while await bob.get_event(envelope.message_id) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            certificate = alice.keyring.certificate_bytes
            device = alice.keyring.device_id
        async with (
            make_node("carol", gap_grace_ms=GRACE_MS) as carol,
            P2PHost(HostConfig(identity_seed=os.urandom(32))) as relay,
        ):
            events = carol.events()
            receiving = asyncio.create_task(released_from(events, device, 3))
            await carol.connect(bob.listen_addrs[0])
            await relay.connect(carol.listen_addrs[0])
            async with await relay.open_stream(carol.peer_id, DELIVER_PROTOCOL) as stream:
                items = [BatchItem(0, carol_id, sent[2].wire)]
                await stream.write_frame(encode_deliver(1, [certificate], items))
                ack = decode_frame(await stream.read_frame())
            assert isinstance(ack, Ack)
            assert ack.results[0].status in (AckStatus.STORED, AckStatus.DUPLICATE)
            got = await receiving
            assert [e.message_id for e in got] == [e.message_id for e in sent]
            assert await carol.members(group) == members | {dave, erin}
            after = await bob.send(group, b"after")
            assert [e.message_id for e in await next_messages(events, 1)] == [after.message_id]


async def test_fetch_requests_from_outside_the_room_or_malformed_are_refused(
    make_node: NodeFactory,
) -> None:
    async with (
        asyncio.timeout(20),
        make_node("alice") as alice,
        make_node("bob", standing=CATALOGUE_STANDING) as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        arriving = asyncio.create_task(next_messages(bob.events(), 1))
        secret = await alice.send(room, b"for bob only")
        await arriving
        await mallory.connect(bob.listen_addrs[0])
        device = DeviceId(secret.sender_device)
        asked = FetchRequest(room=room, sender_device=device, first_seq=1, last_seq=5)
        bad = {
            encode_request(asked): ErrorCode.NOT_AUTHORIZED,  # mallory is no member's home
            encode_canonical([1, room, device, 5, 1]): ErrorCode.MALFORMED,
            b"\x00garbage": ErrorCode.MALFORMED,
            encode_canonical([1, room, device, 1, 1000]): ErrorCode.TOO_LARGE,
            encode_request(asked) + b"\x00" * 200: ErrorCode.TOO_LARGE,
        }
        for frame, code in bad.items():
            async with await mallory.open_stream(bob.peer_id, FETCH_PROTOCOL) as stream:
                await stream.write_frame(frame)
                refusal = decode_answer(await stream.read_frame())
            assert isinstance(refusal, ProtocolErrorFrame) and refusal.code == code


async def test_a_peer_asking_faster_than_its_limit_is_refused_with_rate_limited(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §26.3.1: past its burst a peer's requests get RATE_LIMITED, and then, once its
    bucket refills, answers again. Bob's clock moves only when the test says (on the wall
    clock, a loaded machine asked slower than the refill and was never limited)."""
    async with (
        asyncio.timeout(30),
        Node(node_config(tmp_path / "bob", standing=CATALOGUE_STANDING), clock=clock) as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await mallory.connect(bob.listen_addrs[0])
        asked = FetchRequest(
            room=RoomId(os.urandom(32)),
            sender_device=DeviceId(os.urandom(32)),
            first_seq=1,
            last_seq=1,
        )

        async def ask() -> int:
            async with await mallory.open_stream(bob.peer_id, FETCH_PROTOCOL) as stream:
                await stream.write_frame(encode_request(asked))
                refusal = decode_answer(await stream.read_frame())
            assert isinstance(refusal, ProtocolErrorFrame)
            return refusal.code

        codes = [await ask() for _ in range(REQUESTS_BURST)]
        assert set(codes) == {ErrorCode.NOT_AUTHORIZED}  # the burst is served (and refused)
        assert await ask() == ErrorCode.RATE_LIMITED
        clock.advance(1000 // REQUESTS_PER_S)  # one request's worth of refill
        assert await ask() == ErrorCode.NOT_AUTHORIZED
        assert await ask() == ErrorCode.RATE_LIMITED
        assert mallory.peer_id in bob.connected_peers()  # refused, not banned


async def test_a_tampered_answer_is_discarded_and_the_gap_is_asked_for_again(
    make_node: NodeFactory,
) -> None:
    """Eve's node (a bare libp2p host, the sender's home) answers a fetch with one good and one
    tampered envelope: carol keeps the good one, stores nothing of the tampered one, holds the
    later envelope back, and asks again until a good copy comes."""
    async with (
        asyncio.timeout(30),
        make_node("carol", gap_grace_ms=GRACE_MS) as carol,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as eve,
    ):
        user, device = keypair_from_seed(os.urandom(32)), keypair_from_seed(os.urandom(32))
        cert = issue_certificate(user, DeviceId(device.public), created_ms=0)
        wall = SystemClock().now_ms()
        # Issued now: a stranger's record over 30 days old goes at carol's next purge (SPEC
        # §11.5.4), and her first one runs at start, before or after this learn.
        record = issue_home_record(
            user,
            issued_ms=wall,
            homes=(eve.peer_id,),
            addrs=tuple(eve.listen_addrs),
            devices=(cert,),
        )
        await carol.learn_home_record(encode_home_record(record))
        room = direct_room_id(UserId(user.public), carol.user_id)
        sent = [
            seal(
                device,
                kind=Kind.MESSAGE,
                room=room,
                sender_user=UserId(user.public),
                seq=seq,
                hlc=Timestamp(wall_ms=wall + seq, counter=0),
                content_type="text/plain",
                body=f"m{seq}".encode(),
            )
            for seq in (1, 2, 3)
        ]
        tampered = bytearray(sent[1].wire)
        tampered[-67] ^= 1  # the body's last byte
        asked: list[FetchRequest] = []

        async def answer(stream: FrameStream) -> None:
            request = decode_request(await stream.read_frame())
            asked.append(request)
            second = bytes(tampered) if len(asked) == 1 else sent[1].wire
            wires = {1: sent[0].wire, 2: second}
            pairs = [
                (encode_certificate(cert), wires[s])
                for s in (1, 2)
                if request.wants(room, device.public, s)
            ]
            await stream.write_frame(encode_answer(pairs))

        eve.set_stream_handler(FETCH_PROTOCOL, answer)
        events = carol.events()
        receiving = asyncio.create_task(next_messages(events, 1))
        await eve.connect(carol.listen_addrs[0])
        stream = await eve.open_stream(carol.peer_id, DELIVER_PROTOCOL)
        items = [BatchItem(0, carol.user_id, sent[2].wire)]  # 3 arrives: 1 and 2 are missing
        await stream.write_frame(encode_deliver(1, [encode_certificate(cert)], items))
        ack = decode_frame(await stream.read_frame())
        assert isinstance(ack, Ack) and ack.results[0].status is AckStatus.STORED
        assert [e.message_id for e in await receiving] == [sent[0].message_id]
        await wait_until(lambda: len(asked) >= 2)  # the tampered copy did not close the gap
        got = await next_messages(events, 2)
        assert [e.message_id for e in got] == [e.message_id for e in sent[1:]]
        assert asked[0].first_seq == 1 and asked[1].first_seq == 2
        stored = await carol.get_event(sent[1].message_id)
        assert stored is not None and stored.wire == sent[1].wire


async def test_with_nothing_held_a_look_for_gaps_costs_no_write_batch(
    make_node: NodeFactory,
) -> None:
    """A gap holds a later envelope back: with none held there is none to find, and the look
    (every `gap_grace_ms` / 4 while something is held back; the fetcher sleeps otherwise) must
    not hop through a write batch for nothing."""
    async with asyncio.timeout(20), make_node("idle", retry_poll_ms=60_000) as node:
        gaps = node._services.gaps
        await asyncio.sleep(0.3)  # what the start wrote is committed
        before = node.store.batches_committed
        for _ in range(20):
            await gaps.check()
        assert node.store.batches_committed == before


async def test_a_fetch_answer_that_is_no_answer_is_charged_and_the_gap_asked_again(
    make_node: NodeFactory,
) -> None:
    """Hostile peer (the kit as the sender's home): its first answer to carol's fetch is a
    frame that is neither an answer nor an ERROR frame, charged as a whole frame (§26.5,
    §11.6.1); its refusal next (`NOT_FOUND`) is an answer and costs nothing; the gap is asked
    for again and its good answer fills it."""
    async with (
        asyncio.timeout(30),
        node_and_kit(make_node, "carol", gap_grace_ms=GRACE_MS) as (carol, kit),
    ):
        peer = await kit.connect(carol.listen_addrs[0])
        await kit.announce_home(peer)
        room = direct_room_id(kit.user_id, carol.user_id)
        sent = [kit.forge.message(room, f"m{n}", now_ms=kit.now_ms()) for n in (1, 2)]
        answers = [encode_canonical([9, "no answer"]), encode_error(NotFound("none here"))]
        points: list[int] = []

        async def answer(stream: FrameStream) -> None:
            await stream.read_frame()  # carol's request, for number 1
            points.append(carol.peer_points(kit.peer_id))
            good = encode_answer([(kit.stranger.certificate_bytes, sent[0].wire)])
            await stream.write_frame(answers[len(points) - 1] if len(points) <= 2 else good)

        kit.host.set_stream_handler(FETCH_PROTOCOL, answer)
        events = carol.events()
        receiving = asyncio.create_task(next_messages(events, 2))
        assert await kit.deliver_wires(peer, [sent[1].wire], carol.user_id) == ["STORED"]
        got = await receiving
        assert [e.message_id for e in got] == [e.message_id for e in sent]
        frame_points = UNFORGIVING.frame_points
        assert points == [0, frame_points, frame_points]
        assert carol.peer_points(kit.peer_id) == frame_points
