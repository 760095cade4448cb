"""Fetch stream frames and answer filtering of SPEC §26."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.delivery import ProtocolErrorFrame, encode_error, verify_batch
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import (
    BadSignature,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.fetch import (
    ANSWER_BUDGET_BYTES,
    MAX_FETCH_RANGE,
    MAX_REQUEST_BYTES,
    FetchAnswer,
    FetchRequest,
    answer_batch,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)

ROOM = RoomId(b"r" * 32)
USER = keypair_from_seed(b"u" * 32)
DEVICE = keypair_from_seed(b"d" * 32)
CERT = encode_certificate(issue_certificate(USER, DeviceId(DEVICE.public), created_ms=0))
RECIPIENT = b"c" * 32


def envelope(seq: int, *, room: RoomId = ROOM, body: bytes = b"hi") -> Envelope:
    return seal(
        DEVICE,
        kind=Kind.MESSAGE,
        room=room,
        sender_user=UserId(USER.public),
        seq=seq,
        hlc=Timestamp(wall_ms=1_000 + seq, counter=0),
        content_type="text/plain",
        body=body,
    )


def request(first: int, last: int) -> FetchRequest:
    return FetchRequest(
        room=ROOM, sender_device=DeviceId(DEVICE.public), first_seq=first, last_seq=last
    )


def test_frames_round_trip() -> None:
    asked = request(4, 4 + MAX_FETCH_RANGE - 1)
    assert decode_request(encode_request(asked)) == asked
    events = [envelope(4), envelope(5)]
    answer = decode_answer(encode_answer([(CERT, e.wire) for e in events]))
    assert answer == FetchAnswer(
        certificates=(CERT,), items=((0, events[0].wire), (0, events[1].wire))
    )
    refusal = decode_answer(encode_error(NotAuthorized("not a member's home")))
    assert refusal == ProtocolErrorFrame(code=10, message="not a member's home")


@pytest.mark.parametrize(
    "value",
    [
        [2, ROOM, DEVICE.public, 1, 2],  # an answer's type
        [1, ROOM[:31], DEVICE.public, 1, 2],
        [1, ROOM, DEVICE.public[:31], 1, 2],
        [1, ROOM, DEVICE.public, 0, 2],
        [1, ROOM, DEVICE.public, 3, 2],
        [1, ROOM, DEVICE.public, 1, 1 << 63],
        [1, ROOM, DEVICE.public, 1],
        [1, ROOM, DEVICE.public, -1, 2],
    ],
)
def test_malformed_requests_are_refused(value: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        decode_request(encode_canonical(value))  # type: ignore[arg-type]


def test_oversized_requests_are_refused() -> None:
    """A range over MAX_FETCH_RANGE numbers, or more bytes than a request can hold."""
    with pytest.raises(TooLarge):
        decode_request(encode_request(request(10, 10 + MAX_FETCH_RANGE)))
    with pytest.raises(TooLarge):
        decode_request(encode_request(request(1, 2)) + b"\x00" * MAX_REQUEST_BYTES)


@pytest.mark.parametrize(
    "value",
    [[9], [2, [], [[0, b"x"]]], [2, [CERT], [[1, b"x"]]], [2, [1], []], [2, [CERT], [[0]]], [3]],
)
def test_malformed_answers_are_refused(value: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        decode_answer(encode_canonical(value))  # type: ignore[arg-type]


def test_an_answer_stops_at_its_byte_budget_and_holds_at_least_one_envelope() -> None:
    big = [envelope(seq, body=b"x" * 60_000) for seq in range(1, 16)]
    answer = decode_answer(encode_answer([(CERT, e.wire) for e in big]))
    assert isinstance(answer, FetchAnswer)
    assert 0 < len(answer.items) < len(big)
    assert sum(len(w) for _, w in answer.items) <= ANSWER_BUDGET_BYTES
    assert [w for _, w in answer.items] == [e.wire for e in big[: len(answer.items)]]


def test_only_what_was_asked_for_enters_and_each_number_once() -> None:
    wanted = [envelope(4), envelope(5)]
    stray = [
        envelope(3),  # below the range
        envelope(7),  # above it
        envelope(5, body=b"a second envelope numbered 5"),
        envelope(4, room=RoomId(b"o" * 32)),  # another room
    ]
    wires = [(0, w.wire) for w in [wanted[0], stray[0], wanted[1], *stray[1:]]] + [
        (0, b"\x00not cbor")
    ]
    batch = answer_batch(
        request(4, 6), FetchAnswer(certificates=(CERT,), items=tuple(wires)), RECIPIENT
    )
    assert [i.wire for i in batch.items] == [e.wire for e in wanted]
    assert all(i.recipient == RECIPIENT for i in batch.items)


def test_a_tampered_envelope_in_an_answer_fails_verification_alone() -> None:
    good = envelope(4)
    tampered = bytearray(envelope(5).wire)
    tampered[-70] ^= 1  # a body byte: it still parses, the signature no longer verifies
    answer = FetchAnswer(certificates=(CERT,), items=((0, good.wire), (0, bytes(tampered))))
    batch = answer_batch(request(4, 5), answer, RECIPIENT)
    verified = verify_batch(batch, now_ms=10_000)
    assert verified[0].envelope == good and verified[0].error is None
    assert isinstance(verified[1].error, BadSignature) and verified[1].envelope is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_request(data)
    with contextlib.suppress(RemoteProtocolError):
        decode_answer(data)
