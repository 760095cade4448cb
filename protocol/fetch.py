"""Gap fetching `/hearthmesh/fetch/0` (SPEC §26): frames, and what an answer may carry.

A receiver that holds a sender's envelopes back behind a gap (SPEC §8) asks another node that
should hold the missing numbers: `[1, room, sender_device, first_seq, last_seq]`. The answer
carries the stored envelopes of that sender in that room with those numbers, and the device
certificates that prove their sender, as DELIVER does (SPEC §11.2); or an ERROR frame. Nothing in
an answer is trusted: `answer_batch` keeps only what was asked for, and the asker verifies each
envelope as it verifies a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .delivery import BatchItem, Deliver, ProtocolErrorFrame
from .envelope import MAX_SEQ, RoomId, load_envelope
from .errors import MalformedMessage, RemoteProtocolError, TooLarge
from .identity import KEY_BYTES, DeviceId

__all__ = [
    "ANSWER_BUDGET_BYTES",
    "FETCH_PROTOCOL",
    "MAX_ANSWER_BYTES",
    "MAX_FETCH_RANGE",
    "MAX_REQUEST_BYTES",
    "FetchAnswer",
    "FetchFrameType",
    "FetchRequest",
    "answer_batch",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
]

FETCH_PROTOCOL: Final = "/hearthmesh/fetch/0"
MAX_FETCH_RANGE: Final = 256
"""Most sequence numbers one request names."""
MAX_REQUEST_BYTES: Final = 128
"""A request is about 90 bytes; anything longer is refused before parsing."""
MAX_ANSWER_BYTES: Final = 1 << 20
"""The frame limit of SPEC §10.2."""
ANSWER_BUDGET_BYTES: Final = 768 * 1024
"""Envelope bytes one answer carries at most; the asker asks again for the rest."""


class FetchFrameType(IntEnum):
    """First element of each frame on a fetch stream (SPEC §26.2); 3 is the ERROR of §11.1."""

    REQUEST = 1
    ANSWER = 2
    ERROR = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    """Envelopes `first_seq..last_seq` of `sender_device` in `room`."""

    room: RoomId
    sender_device: DeviceId
    first_seq: int
    last_seq: int

    def wants(self, room: bytes, sender_device: bytes, seq: int) -> bool:
        """Does an envelope with these fields answer this request?"""
        return (
            room == self.room
            and sender_device == self.sender_device
            and self.first_seq <= seq <= self.last_seq
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchAnswer:
    """Wire bytes, not yet verified: certificates, and (certificate index, envelope) items."""

    certificates: tuple[bytes, ...]
    items: tuple[tuple[int, bytes], ...]


def encode_request(request: FetchRequest) -> bytes:
    """[1, room, sender_device, first_seq, last_seq]."""
    return encode_canonical(
        [
            int(FetchFrameType.REQUEST),
            request.room,
            request.sender_device,
            request.first_seq,
            request.last_seq,
        ]
    )


def decode_request(data: bytes) -> FetchRequest:
    """Parse a request.

    Raises:
        TooLarge: over MAX_REQUEST_BYTES (checked first), or a range over MAX_FETCH_RANGE.
        MalformedMessage: anything else that is not a request of SPEC §26.2.
    """
    match decode_canonical(data, max_bytes=MAX_REQUEST_BYTES):
        case [1, bytes() as room, bytes() as device, int() as first, int() as last] if (
            len(room) == len(device) == KEY_BYTES and 1 <= first <= last <= MAX_SEQ
        ):
            if last - first >= MAX_FETCH_RANGE:
                raise TooLarge(f"a request names at most {MAX_FETCH_RANGE} sequence numbers")
            return FetchRequest(
                room=RoomId(room), sender_device=DeviceId(device), first_seq=first, last_seq=last
            )
    raise MalformedMessage("a request is [1, room, sender device, first seq, last seq]")


def encode_answer(events: list[tuple[bytes, bytes]]) -> bytes:
    """[2, [certificate...], [[certificate index, envelope], ...]] from (certificate, envelope)
    pairs in sequence order; stops before ANSWER_BUDGET_BYTES of envelopes (at least one)."""
    certificates: list[CborValue] = []
    index_of: dict[bytes, int] = {}
    items: list[CborValue] = []
    size = 0
    for certificate, wire in events:
        if items and size + len(wire) > ANSWER_BUDGET_BYTES:
            break
        if certificate not in index_of:
            index_of[certificate] = len(certificates)
            certificates.append(certificate)
        items.append([index_of[certificate], wire])
        size += len(wire)
    return encode_canonical([int(FetchFrameType.ANSWER), certificates, items])


def decode_answer(data: bytes) -> FetchAnswer | ProtocolErrorFrame:
    """Parse an answer or an ERROR frame (structure only: see `answer_batch`).

    Raises:
        TooLarge: over MAX_ANSWER_BYTES (checked first), or more than MAX_FETCH_RANGE items.
        MalformedMessage: anything else that is not an answer of SPEC §26.3.
    """
    value = decode_canonical(data, max_bytes=MAX_ANSWER_BYTES)
    match value:
        case [2, list() as certificates, list() as items]:
            pass
        case [3, int() as code, str() as message] if code >= 0 and len(message) <= 256:
            return ProtocolErrorFrame(code=code, message=message)  # no cut: one encoding
        case _:
            raise MalformedMessage("not a fetch answer")
    if len(items) > MAX_FETCH_RANGE or len(certificates) > MAX_FETCH_RANGE:
        raise TooLarge(f"an answer holds at most {MAX_FETCH_RANGE} envelopes")
    if not all(isinstance(c, bytes) for c in certificates):
        raise MalformedMessage("certificates are byte strings")
    pairs: list[tuple[int, bytes]] = []
    for item in items:
        match item:
            case [int() as index, bytes() as wire] if 0 <= index < len(certificates):
                pairs.append((index, wire))
            case _:
                raise MalformedMessage("an answer item is [certificate index, envelope]")
    return FetchAnswer(
        certificates=tuple(c for c in certificates if isinstance(c, bytes)),
        items=tuple(pairs),
    )


def answer_batch(request: FetchRequest, answer: FetchAnswer, recipient: bytes) -> Deliver:
    """The items of `answer` that `request` asked for, each number once, as a batch for the
    receive path (which verifies every envelope and certificate, SPEC §11.2).

    An item that does not parse, names another room or sender, or repeats a number is dropped:
    the answerer may be wrong or hostile, and only what was asked for may enter.
    """
    items: list[BatchItem] = []
    seen: set[int] = set()
    for index, wire in answer.items:
        try:
            envelope = load_envelope(wire)
        except RemoteProtocolError:
            continue
        if envelope.seq in seen or not request.wants(
            envelope.room, envelope.sender_device, envelope.seq
        ):
            continue
        seen.add(envelope.seq)
        items.append(BatchItem(index, recipient, wire))
    return Deliver(batch_id=0, certificates=answer.certificates, items=tuple(items))
