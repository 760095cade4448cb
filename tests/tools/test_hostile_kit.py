"""The hostile-peer kit sends what it says (tools/hostile): its forgeries break exactly the rule
they name, checked by our own decoders and by a real node's answers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.host import peer_id_from_seed
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, BatchItem, Deliver, verify_batch
from hearthmesh.protocol.envelope import Kind, decode_envelope
from hearthmesh.protocol.errors import (
    BadCertificate,
    BadSignature,
    NotAuthorized,
    TooLarge,
    UnknownKind,
    UnsupportedVersion,
)
from hearthmesh.protocol.gossip import decode_gossip, encode_gossip, room_topic
from hearthmesh.protocol.membership import decode_membership
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile import HostilePeer, grind_seed, new_stranger
from hearthmesh.tools.hostile.catalogue import Scale, Target, run_attack, stream_hold
from hearthmesh.tools.hostile.forge import EnvelopeForge, certificate_of_other, random_room
from hearthmesh.tools.hostile.pipe import deliver_pipe

from ..conftest import counter_rng
from ..integration.conftest import collect

NOW_MS = 1_700_000_000_000


@pytest.fixture
def forge() -> EnvelopeForge:
    return EnvelopeForge(new_stranger(counter_rng("kit"), now_ms=NOW_MS))


def test_a_sealed_envelope_is_valid(forge: EnvelopeForge) -> None:
    room = random_room(counter_rng("room"))
    envelope = forge.message(room, "hi", now_ms=NOW_MS)
    assert decode_envelope(envelope.wire) == envelope
    assert forge.message(room, "again", now_ms=NOW_MS).seq == envelope.seq + 1


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("bad_signature", BadSignature),
        ("unknown_kind", UnknownKind),
        ("unknown_version", UnsupportedVersion),
        ("oversized_body", TooLarge),
    ],
)
def test_each_forgery_breaks_the_rule_it_names(
    forge: EnvelopeForge, make: str, error: type[Exception]
) -> None:
    wire = getattr(forge, make)(random_room(counter_rng("room")), now_ms=NOW_MS)
    with pytest.raises(error):
        decode_envelope(wire)


def test_raw_envelopes_are_correctly_signed_otherwise(forge: EnvelopeForge) -> None:
    """With every field legal, `raw` makes what `seal` makes: the signature is right."""
    room = random_room(counter_rng("room"))
    wire = forge.raw(room=room, now_ms=NOW_MS, kind=int(Kind.MESSAGE), body=b"ok")
    assert decode_envelope(wire).body == b"ok"


def test_certificates_that_name_someone_else_are_refused(forge: EnvelopeForge) -> None:
    rng = counter_rng("certs")
    victim = new_stranger(rng, now_ms=NOW_MS).user_id
    certificate, wire = forge.impersonation(random_room(rng), victim, now_ms=NOW_MS)
    other = certificate_of_other(rng, now_ms=NOW_MS)
    mine = forge.message(random_room(rng), "mine", now_ms=NOW_MS).wire
    batch = Deliver(
        batch_id=1,
        certificates=(certificate, other),
        items=(BatchItem(0, victim, wire), BatchItem(1, victim, mine)),
    )
    first, second = verify_batch(batch, now_ms=NOW_MS, certificates=VerifiedCertificates())
    assert isinstance(first.error, BadCertificate)
    assert isinstance(second.error, NotAuthorized)


def test_the_oversized_membership_envelope_is_signed_but_its_body_too_large(
    forge: EnvelopeForge,
) -> None:
    """It passes a room topic's checks (signature, certificate) and fails only the body limit."""
    envelope = forge.oversized_membership(random_room(counter_rng("room")), now_ms=NOW_MS)
    payload = encode_gossip(forge.stranger.certificate_bytes, envelope.wire)
    assert decode_gossip(payload, now_ms=NOW_MS).envelope == envelope
    with pytest.raises(TooLarge):
        decode_membership(envelope.body)


def test_grinding_keeps_the_seed_whose_peer_id_sorts_first() -> None:
    best = grind_seed(counter_rng("grind"), tries=50)
    again = counter_rng("grind")
    assert peer_id_from_seed(best) == min(peer_id_from_seed(again(32)) for _ in range(50))


@pytest.fixture
async def victim(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        data_dir=tmp_path / "victim",
        listen_addrs=("/ip4/127.0.0.1/tcp/0",),
        standing=StandingPolicy(ban_points=1_000_000),  # the codes are the subject here
    )
    async with Node(config) as node:
        yield node


@pytest.mark.integration
async def test_a_real_node_answers_the_kit_with_the_codes_it_names(victim: Node) -> None:
    async with asyncio.timeout(10), HostilePeer() as kit:
        await kit.connect(victim.listen_addrs[0])
        room = direct_room_id(kit.user_id, victim.user_id)
        forge, now = kit.forge, kit.now_ms()
        good = forge.message(room, "hello", now_ms=now).wire
        wires = [
            good,
            good,  # replayed in the same batch
            forge.bad_signature(room, now_ms=now),
            forge.unknown_kind(room, now_ms=now),
            forge.unknown_version(room, now_ms=now),
            forge.oversized_body(room, now_ms=now),
        ]
        outcomes = await kit.deliver_wires(victim.peer_id, wires, victim.user_id)
        assert outcomes[0] == "STORED"
        assert outcomes[2:] == [
            "REJECTED:BAD_SIGNATURE",
            "REJECTED:UNKNOWN_KIND",
            "REJECTED:UNSUPPORTED_VERSION",
            "REJECTED:TOO_LARGE",
        ]
        assert await kit.deliver_wires(victim.peer_id, [good], victim.user_id) == ["DUPLICATE"]
        assert await kit.deliver_raw(victim.peer_id, os.urandom(64)) == "ERROR:MALFORMED"
        cut = await kit.partial_frame(victim.peer_id, DELIVER_PROTOCOL, declared=100, sent=50)
        assert cut.outcome == "closed"


@pytest.mark.integration
async def test_the_kit_holds_streams_open_inside_a_partial_frame(victim: Node) -> None:
    target = Target(
        peer_id=victim.peer_id,
        address=victim.listen_addrs[0],
        user=victim.user_id,
        scale=Scale(held_streams=4, held_frame_bytes=4096, hold_s=0.2),
    )
    async with asyncio.timeout(10):
        seen = await run_attack(stream_hold, target)
    assert seen.notes["opened"] == 4
    assert seen.outcomes["held"] == 4
    assert seen.target_up is True


def test_a_rotated_kit_has_a_new_peer_id_and_the_same_user() -> None:
    kit = HostilePeer(rng=counter_rng("rotate"))
    again, other = kit.rotated(), kit.rotated(new_user=True)
    assert again.peer_id != kit.peer_id and again.user_id == kit.user_id
    assert other.peer_id not in (kit.peer_id, again.peer_id) and other.user_id != kit.user_id


@pytest.mark.integration
async def test_the_kit_publishes_on_a_room_topic_the_node_follows(victim: Node) -> None:
    """Gossip reaches a real node: a valid message of our stranger, on the topic of the
    direct room the victim opened with it, is stored there."""
    async with asyncio.timeout(10), HostilePeer() as kit:
        room = await victim.open_direct(kit.user_id)
        await kit.connect(victim.listen_addrs[0])
        assert await kit.join(room_topic(room), victim.peer_id)
        arrived = asyncio.create_task(collect(victim.events(), MessageReceived, 1))
        envelope = kit.forge.message(room, "over gossip", now_ms=kit.now_ms())
        assert await kit.publish(room_topic(room), kit.gossip(envelope.wire)) == "published"
        (event,) = await arrived
        assert event.envelope == envelope


@pytest.mark.integration
async def test_a_pipe_writes_batches_without_waiting_and_counts_every_answer(
    victim: Node,
) -> None:
    async with asyncio.timeout(10), HostilePeer() as kit:
        await kit.connect(victim.listen_addrs[0])
        room = direct_room_id(kit.user_id, victim.user_id)
        batches = [
            [BatchItem(0, victim.user_id, kit.forge.message(room, f"{b}.{i}", now_ms=1).wire)]
            for b in range(3)
            for i in range(2)
        ]
        async with deliver_pipe(kit, victim.peer_id) as pipe:
            for batch in batches:
                assert await pipe.send(batch)
            await pipe.wait_answered()
        assert pipe.outcomes == {"STORED": 6}
