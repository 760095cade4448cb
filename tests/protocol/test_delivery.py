"""Deliver-stream frames of SPEC §11: batches, signed acks, per-item verification."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol import delivery as delivery_module
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.delivery import (
    UNPARSED_ID,
    Ack,
    AckStatus,
    BatchItem,
    Deliver,
    DeliveryResult,
    ProtocolErrorFrame,
    ack_frame,
    decode_frame,
    encode_ack,
    encode_deliver,
    encode_error,
    rejected,
    sign_ack,
    verify_ack,
    verify_batch,
)
from hearthmesh.protocol.envelope import (
    Envelope,
    Kind,
    MessageId,
    RoomId,
    seal,
    verify_envelope,
)
from hearthmesh.protocol.errors import (
    BadCertificate,
    BadSignature,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    SIGNATURE_BYTES,
    DeviceId,
    UserId,
    decode_certificate,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from tests.conftest import examples

NOW_MS = 1_700_000_000_000
USER = keypair_from_seed(b"\x01" * 32)
DEVICE = keypair_from_seed(b"\x02" * 32)
NODE = keypair_from_seed(b"\x03" * 32)
RECIPIENT = bytes(range(32))
CERT = encode_certificate(issue_certificate(USER, DeviceId(DEVICE.public), created_ms=NOW_MS))


def envelope_wire(seq: int, user: bytes = USER.public) -> bytes:
    return seal(
        DEVICE,
        kind=Kind.MESSAGE,
        room=RoomId(bytes(32)),
        sender_user=UserId(user),
        seq=seq,
        hlc=Timestamp(wall_ms=NOW_MS, counter=seq),
        content_type="text/plain",
        body=b"x",
    ).wire


def test_deliver_round_trips_and_verifies() -> None:
    frame = decode_frame(
        encode_deliver(
            7,
            [CERT],
            [BatchItem(0, RECIPIENT, envelope_wire(1)), BatchItem(0, RECIPIENT, envelope_wire(2))],
        )
    )
    assert isinstance(frame, Deliver)
    assert frame.batch_id == 7
    items = verify_batch(frame, now_ms=NOW_MS)
    assert [i.error for i in items] == [None, None]
    assert [i.envelope.seq for i in items if i.envelope] == [1, 2]


def test_a_shared_certificate_cache_remembers_across_batches() -> None:
    frame = decode_frame(encode_deliver(7, [CERT], [BatchItem(0, RECIPIENT, envelope_wire(1))]))
    assert isinstance(frame, Deliver)
    seen = VerifiedCertificates()  # empty, so falsy: it must still be the one filled
    assert [i.error for i in verify_batch(frame, now_ms=NOW_MS, certificates=seen)] == [None]
    assert decode_certificate(CERT) in seen


def test_a_remembered_certificates_forgery_is_refused_in_a_later_batch() -> None:
    seen = VerifiedCertificates()
    forged = encode_certificate(
        dataclasses.replace(decode_certificate(CERT), signature=bytes(SIGNATURE_BYTES))
    )
    results = []
    for cert in (CERT, forged, CERT):
        frame = decode_frame(encode_deliver(7, [cert], [BatchItem(0, RECIPIENT, envelope_wire(1))]))
        assert isinstance(frame, Deliver)
        results.append(verify_batch(frame, now_ms=NOW_MS, certificates=seen)[0].error)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BadCertificate)


def test_one_bad_item_does_not_spoil_the_batch() -> None:
    forged = bytearray(envelope_wire(2))
    forged[-1] ^= 1
    frame = decode_frame(
        encode_deliver(
            1,
            [CERT],
            [
                BatchItem(0, RECIPIENT, envelope_wire(1)),
                BatchItem(0, RECIPIENT, bytes(forged)),
                BatchItem(0, RECIPIENT, b"junk"),
            ],
        )
    )
    assert isinstance(frame, Deliver)
    items = verify_batch(frame, now_ms=NOW_MS)
    assert items[0].error is None
    assert isinstance(items[1].error, BadSignature)
    assert isinstance(items[2].error, MalformedMessage)
    assert items[2].message_id == UNPARSED_ID


def test_one_envelope_for_many_recipients_is_verified_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay hop for a group's absent members (SPEC §11.7.2): the same bytes, one check."""
    checks: list[Envelope] = []

    def counted(envelope: Envelope) -> None:
        checks.append(envelope)
        verify_envelope(envelope)

    monkeypatch.setattr(delivery_module, "verify_envelope", counted)
    forged = bytearray(envelope_wire(2))
    forged[-1] ^= 1
    recipients = [bytes([n]) * 32 for n in range(1, 41)]
    items = [BatchItem(0, r, envelope_wire(1)) for r in recipients]
    frame = decode_frame(
        encode_deliver(1, [CERT], [*items, BatchItem(0, RECIPIENT, bytes(forged))])
    )
    assert isinstance(frame, Deliver)
    verified = verify_batch(frame, now_ms=NOW_MS)
    assert [v.error for v in verified[:-1]] == [None] * len(recipients)
    assert {v.message_id for v in verified[:-1]} == {verified[0].message_id}
    assert isinstance(verified[-1].error, BadSignature)  # other bytes are checked on their own
    assert len(checks) == 2


def test_certificate_must_name_the_sender() -> None:
    mallory = keypair_from_seed(b"\x09" * 32)
    frame = decode_frame(
        encode_deliver(1, [CERT], [BatchItem(0, RECIPIENT, envelope_wire(1, mallory.public))])
    )
    assert isinstance(frame, Deliver)
    assert isinstance(verify_batch(frame, now_ms=NOW_MS)[0].error, NotAuthorized)


def test_expired_or_forged_certificate_rejects_its_items() -> None:
    expired = encode_certificate(
        issue_certificate(USER, DeviceId(DEVICE.public), created_ms=NOW_MS, expires_ms=NOW_MS + 1)
    )
    frame = decode_frame(encode_deliver(1, [expired], [BatchItem(0, RECIPIENT, envelope_wire(1))]))
    assert isinstance(frame, Deliver)
    assert isinstance(verify_batch(frame, now_ms=NOW_MS + 5)[0].error, BadCertificate)


def test_ack_is_signed_and_round_trips() -> None:
    results = (
        DeliveryResult(message_id=UNPARSED_ID, status=AckStatus.STORED),
        rejected(UNPARSED_ID, BadSignature("x")),
    )
    ack = sign_ack(NODE, 3, results)
    decoded = decode_frame(encode_ack(ack))
    assert decoded == ack
    assert isinstance(decoded, Ack)
    verify_ack(decoded)
    assert decoded.results[1].code == 4


@pytest.mark.parametrize("count", [0, 1, 23, 24, 256])
def test_an_ack_frame_is_the_signed_ack_encoded(count: int) -> None:
    results = tuple(
        DeliveryResult(message_id=MessageId(bytes([n]) * 32), status=AckStatus.STORED, code=n)
        for n in range(count)
    )
    wire = ack_frame(NODE, 2**40, results)
    assert wire == encode_ack(sign_ack(NODE, 2**40, results))
    decoded = decode_frame(wire)  # strict: the canonical encoding
    assert isinstance(decoded, Ack)
    verify_ack(decoded)
    assert decoded.results == results


def test_a_decoded_ack_is_verified_without_encoding_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = tuple(
        DeliveryResult(message_id=MessageId(bytes([n]) * 32), status=AckStatus.STORED)
        for n in range(3)
    )
    decoded = decode_frame(ack_frame(NODE, 9, results))
    assert isinstance(decoded, Ack)

    def no_encoding(_: object) -> bytes:
        raise AssertionError("encoded again")

    monkeypatch.setattr(delivery_module, "encode_canonical", no_encoding)
    verify_ack(decoded)
    forged = dataclasses.replace(decoded, results=results[:2])  # its own fields are encoded
    with pytest.raises(AssertionError, match="encoded again"):
        verify_ack(forged)
    monkeypatch.undo()
    with pytest.raises(BadSignature):
        verify_ack(forged)


def test_tampered_ack_fails() -> None:
    ack = sign_ack(NODE, 3, (DeliveryResult(message_id=UNPARSED_ID, status=AckStatus.REJECTED),))
    lie = Ack(
        batch_id=3,
        node_key=ack.node_key,
        results=(DeliveryResult(message_id=UNPARSED_ID, status=AckStatus.STORED),),
        signature=ack.signature,
    )
    with pytest.raises(BadSignature):
        verify_ack(lie)


def test_error_frame_round_trips() -> None:
    frame = decode_frame(encode_error(TooLarge("frame of 9 MB")))
    assert frame == ProtocolErrorFrame(code=5, message="frame of 9 MB")


@pytest.mark.parametrize(
    "value",
    [
        [9, 1],
        [1, 1, [CERT], [[1, bytes(32), b"x"]]],  # certificate index out of range
        [1, 1, [CERT], [[0, b"short", b"x"]]],
        [1, 1, [CERT], [[0]]],
        [2, 1, b"short", [], bytes(64)],
        [3, 1],
    ],
)
def test_malformed_frames(value: list[object]) -> None:
    from hearthmesh.protocol.canonical import encode_canonical

    with pytest.raises(MalformedMessage):
        decode_frame(encode_canonical(value))  # type: ignore[arg-type]


def test_too_many_items_is_too_large() -> None:
    with pytest.raises(TooLarge):
        decode_frame(encode_deliver(1, [CERT], [BatchItem(0, RECIPIENT, b"x")] * 257))


@settings(max_examples=examples(300))
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(data)
