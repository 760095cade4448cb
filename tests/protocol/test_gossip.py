"""Gossip payloads (protocol/gossip.py, SPEC §14): the message id gossipsub dedupes by."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import Kind, RoomId, seal
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.gossip import encode_gossip, gossip_message_id
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed

DEVICE = keypair_from_seed(b"\x01" * 32)
USER = UserId(keypair_from_seed(b"\x02" * 32).public)
ROOM = RoomId(b"\x03" * 32)


def test_the_gossip_message_id_is_the_envelopes_whatever_certificate_rides_with_it() -> None:
    envelope = seal(
        DEVICE,
        kind=Kind.MESSAGE,
        room=ROOM,
        sender_user=USER,
        seq=1,
        hlc=Timestamp(wall_ms=1_700_000_000_000, counter=0),
        content_type="text/plain",
        body=b"hello",
    )
    first = gossip_message_id(encode_gossip(b"one certificate", envelope.wire))
    again = gossip_message_id(encode_gossip(b"another", envelope.wire))
    assert first == again == envelope.message_id


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", encode_canonical([b"cert"]), encode_canonical([b"cert", 7])],
    ids=["empty", "not-cbor", "one-field", "envelope-not-bytes"],
)
def test_what_is_not_a_gossip_payload_raises_a_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        gossip_message_id(data)
