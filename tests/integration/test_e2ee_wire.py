"""Encrypted envelopes over the real DELIVER stream (SPEC §11.2, §27.6, §27.11): a ciphertext
tampered with by its signer's device is refused UNDECRYPTABLE, one changed on the way
BAD_SIGNATURE, and neither is stored (no event, no plaintext, nothing held)."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from hearthmesh.node.node import Node
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    AckStatus,
    BatchItem,
    decode_frame,
    encode_deliver,
)
from hearthmesh.protocol.envelope import Envelope, Kind, decode_envelope, seal
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.hlc import Timestamp

from .conftest import NodeFactory
from .test_devices import wait_until_readable

pytestmark = pytest.mark.integration


def _resealed(node: Node, sent: Envelope, body: bytes, seq: int) -> Envelope:
    """`sent` again, `body` in place of its ciphertext, signed by `node`'s own device: what a
    member's device that breaks its own ciphertext sends."""
    return seal(
        node.keyring.device,
        kind=Kind.MESSAGE,
        room=sent.room,
        sender_user=node.user_id,
        seq=seq,
        hlc=Timestamp(wall_ms=sent.hlc.wall_ms + 1, counter=0),
        content_type=e2ee.ENCRYPTED_CONTENT_TYPE,
        body=body,
    )


async def test_a_tampered_ciphertext_is_refused_with_its_code_and_nothing_is_stored(
    make_node: NodeFactory,
) -> None:
    async with (
        asyncio.timeout(60),
        make_node("alice") as alice,
        make_node("bob") as bob,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as relay,
    ):
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        sent = decode_envelope((await alice.send(room, b"the real one")).wire)
        await wait_until_readable(bob, room)  # bob holds alice's session: a MAC can be checked
        encrypted = e2ee.decode_encrypted_body(sent.body)
        flipped = bytearray(encrypted.ciphertext)
        flipped[10] ^= 1
        bad_mac = _resealed(
            alice,
            sent,
            e2ee.encode_encrypted_body(dataclasses.replace(encrypted, ciphertext=bytes(flipped))),
            sent.seq + 1,
        )
        on_the_way = bytearray(_resealed(alice, sent, sent.body, sent.seq + 2).wire)
        on_the_way[-80] ^= 1  # inside the body, covered by the signature

        await relay.connect(bob.listen_addrs[0])
        items = [BatchItem(0, bob.user_id, w) for w in (bad_mac.wire, bytes(on_the_way))]
        async with await relay.open_stream(bob.peer_id, DELIVER_PROTOCOL) as stream:
            await stream.write_frame(encode_deliver(1, [alice.keyring.certificate_bytes], items))
            ack = decode_frame(await stream.read_frame())
        assert isinstance(ack, Ack)
        assert [(r.status, r.code) for r in ack.results] == [
            (AckStatus.REJECTED, ErrorCode.UNDECRYPTABLE),
            (AckStatus.REJECTED, ErrorCode.BAD_SIGNATURE),
        ]
        assert await bob.get_event(bad_mac.message_id) is None
        store = bob.store.store
        assert await bob.store.read(store.plaintext, bad_mac.message_id) is None
        assert await bob.store.read(store.held_encrypted, encrypted.session_id, 10) == []
        assert [e.envelope.message_id for e in (await bob.history(room, limit=100)).events][
            -1
        ] == sent.message_id
