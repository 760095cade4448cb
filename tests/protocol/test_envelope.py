"""Envelopes of SPEC §5-7: sealing, strict decoding, ids, size limits."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.envelope import (
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_SEQ,
    Envelope,
    Kind,
    RoomId,
    decode_envelope,
    load_envelope,
    read_stored_envelope,
    seal,
    sender_device_of,
)
from hearthmesh.protocol.errors import (
    BadSignature,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
    UnknownKind,
)
from hearthmesh.protocol.hlc import MAX_COUNTER, Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from tests.conftest import examples

DEVICE = keypair_from_seed(b"\x01" * 32)
USER = UserId(keypair_from_seed(b"\x02" * 32).public)
ROOM = RoomId(b"\x03" * 32)


def make(
    body: bytes = b"hello",
    *,
    seq: int = 1,
    kind: Kind = Kind.MESSAGE,
    content_type: str = "text/plain",
    key: KeyPair = DEVICE,
) -> Envelope:
    return seal(
        key,
        kind=kind,
        room=ROOM,
        sender_user=USER,
        seq=seq,
        hlc=Timestamp(wall_ms=1_700_000_000_000, counter=seq),
        content_type=content_type,
        body=body,
    )


def test_decode_returns_what_was_sealed() -> None:
    envelope = make()
    decoded = decode_envelope(envelope.wire)
    assert decoded == envelope
    assert decoded.message_id == envelope.message_id
    assert decoded.wire == envelope.wire


def test_message_id_is_stable_and_distinct() -> None:
    assert make().message_id == make().message_id  # Ed25519 is deterministic
    assert make(seq=1).message_id != make(seq=2).message_id
    assert len(make().message_id) == 32


def test_load_skips_the_signature_check_only() -> None:
    forged = bytearray(make().wire)
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        decode_envelope(bytes(forged))
    assert load_envelope(bytes(forged)).body == b"hello"


def test_body_at_the_limit_is_accepted() -> None:
    envelope = make(bytes(MAX_BODY_BYTES))
    assert len(envelope.wire) <= MAX_ENVELOPE_BYTES
    assert decode_envelope(envelope.wire).body == bytes(MAX_BODY_BYTES)


def test_body_over_the_limit_is_refused_when_sealing() -> None:
    with pytest.raises(TooLarge):
        make(bytes(MAX_BODY_BYTES + 1))


def test_input_over_the_envelope_limit_is_refused_before_parsing() -> None:
    with pytest.raises(TooLarge):
        decode_envelope(b"\x00" * (MAX_ENVELOPE_BYTES + 1))


@pytest.mark.parametrize("seq", [0, MAX_SEQ + 1])
def test_seq_out_of_range_is_refused(seq: int) -> None:
    with pytest.raises(MalformedMessage):
        make(seq=seq)


@pytest.mark.parametrize("content_type", ["x" * 65, "text/plain\n", "tëxt/plain"])
def test_bad_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(MalformedMessage):
        make(content_type=content_type)


def test_ephemeral_kinds() -> None:
    assert {k for k in Kind if k.ephemeral} == {Kind.TYPING, Kind.PRESENCE}


def test_unknown_kind_is_refused_when_sealing() -> None:
    with pytest.raises(UnknownKind):
        make(kind=99)  # type: ignore[arg-type]


ENVELOPES = st.builds(
    lambda kind, seq, wall, counter, ct, body: seal(
        DEVICE,
        kind=kind,
        room=ROOM,
        sender_user=USER,
        seq=seq,
        hlc=Timestamp(wall_ms=wall, counter=counter),
        content_type=ct,
        body=body,
    ),
    st.sampled_from(Kind),
    st.integers(min_value=1, max_value=MAX_SEQ),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.integers(min_value=0, max_value=MAX_COUNTER),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64),
    st.binary(max_size=512),
)


@settings(max_examples=examples(200))
@given(ENVELOPES)
def test_round_trip(envelope: Envelope) -> None:
    assert decode_envelope(envelope.wire) == envelope


@settings(max_examples=examples(200))
@given(ENVELOPES)
def test_sender_device_is_read_from_the_wire_as_a_parse_reads_it(envelope: Envelope) -> None:
    assert sender_device_of(envelope.wire) == load_envelope(envelope.wire).sender_device


@settings(max_examples=examples(200))
@given(ENVELOPES)
def test_a_stored_envelope_loads_as_the_strict_parse_does(envelope: Envelope) -> None:
    stored = read_stored_envelope(envelope.wire)
    assert stored == load_envelope(envelope.wire)
    assert (stored.message_id, stored.wire) == (envelope.message_id, envelope.wire)


@settings(max_examples=examples(300))
@given(st.binary(max_size=600))
def test_damaged_stored_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        read_stored_envelope(data)


def test_sender_device_of_what_is_no_envelope_raises() -> None:
    with pytest.raises(MalformedMessage):
        sender_device_of(b"\x8a\x00" + b"\x00" * 120)


@settings(max_examples=examples(300))
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_envelope(data)


@settings(max_examples=examples(300))
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_bit_flip_is_rejected(position: int, bit: int) -> None:
    wire = bytearray(make().wire)
    wire[position % len(wire)] ^= 1 << bit
    with pytest.raises(RemoteProtocolError):
        decode_envelope(bytes(wire))


def test_other_devices_cannot_sign_for_this_one(rng: Callable[[int], bytes]) -> None:
    mallory = keypair_from_seed(rng(32))
    theirs = make(key=mallory)
    spliced = theirs.wire.replace(mallory.public, DEVICE.public)
    with pytest.raises(BadSignature):
        decode_envelope(spliced)
