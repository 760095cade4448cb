"""The signed envelope every event travels in (SPEC §5), and its canonical codec (SPEC §6).

Wire form: the canonical CBOR array of SPEC §5.1's ten fields. The device signs the same array
without its last field (SPEC §5.4); the message id is SHA-256 of those signed bytes, so a
duplicate is recognised anywhere without trusting whoever forwarded it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NewType

from .canonical import decode_canonical, encode_canonical, read_kept
from .errors import MalformedMessage, TooLarge, UnknownKind, UnsupportedVersion
from .hlc import TIMESTAMP_BYTES, Timestamp, decode_timestamp, encode_timestamp
from .identity import KEY_BYTES, SIGNATURE_BYTES, DeviceId, KeyPair, UserId, verify_signature

__all__ = [
    "ENVELOPE_DOMAIN",
    "MAX_BODY_BYTES",
    "MAX_CONTENT_TYPE_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_SEQ",
    "PROTOCOL_VERSION",
    "Envelope",
    "Kind",
    "MessageId",
    "RoomId",
    "decode_envelope",
    "load_envelope",
    "read_stored_envelope",
    "seal",
    "sender_device_of",
    "verify_envelope",
]

PROTOCOL_VERSION: Final = 0
ENVELOPE_DOMAIN: Final = b"hearthmesh/envelope/v0\x00"
MAX_BODY_BYTES: Final = 65_536
MAX_CONTENT_TYPE_BYTES: Final = 64
MAX_ENVELOPE_BYTES: Final = MAX_BODY_BYTES + 512
MAX_SEQ: Final = (1 << 63) - 1

RoomId = NewType("RoomId", bytes)
"""32 bytes (SPEC §3.4)."""
MessageId = NewType("MessageId", bytes)
"""SHA-256 of an envelope's signed bytes, 32 bytes (SPEC §5.5)."""

_ARRAY_10: Final = b"\x8a"
_ARRAY_9: Final = b"\x89"
_SIGNATURE_ITEM: Final = b"\x58\x40"  # CBOR byte string header of 64 bytes
_SIGNATURE_TAIL: Final = len(_SIGNATURE_ITEM) + SIGNATURE_BYTES
_ID_ITEM: Final = b"\x58\x20"  # CBOR byte string header of 32 bytes
_ID_ITEMS_AT: Final = (3, 37, 71)
"""Where room, user and device start in a wire form whose kind is one byte (SPEC §5.1): after
the array header, the version and the kind, each a 32-byte string (2 header bytes + 32)."""
_DEVICE_AT: Final = _ID_ITEMS_AT[2] + len(_ID_ITEM)


class Kind(IntEnum):
    """Envelope kinds (SPEC §5.2). Values are never renumbered or reused."""

    MESSAGE = 1
    EDIT = 2
    RECALL = 3
    REACTION = 4
    RECEIPT = 5
    MEMBERSHIP = 6
    PROFILE = 7
    HOME_RECORD = 8
    TYPING = 9
    PRESENCE = 10
    PRIVATE = 11
    ROOM_KEY = 12

    @property
    def ephemeral(self) -> bool:
        """Ephemeral kinds are relayed but never stored (SPEC §5.2)."""
        return self in (Kind.TYPING, Kind.PRESENCE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A signed event. One only exists in memory after its signature was checked (or made)."""

    version: int
    kind: Kind
    room: RoomId
    sender_user: UserId
    sender_device: DeviceId
    seq: int
    """Per (sender device, room) sequence number, from 1 (SPEC §8)."""
    hlc: Timestamp
    content_type: str
    body: bytes
    """Opaque to relays: ciphertext once end-to-end encryption is on."""
    signature: bytes
    wire: bytes = field(repr=False, compare=False)
    """The canonical encoding, exactly as signed, sent and stored."""
    message_id: MessageId = field(compare=False)

    @property
    def order_key(self) -> tuple[Timestamp, bytes, int]:
        """History order (SPEC §4.5): HLC, then sender device, then sequence."""
        return (self.hlc, self.sender_device, self.seq)


def _signing_bytes_of_wire(wire: bytes) -> bytes:
    # The 9-item array is the 10-item one with its header changed and the signature cut off.
    return ENVELOPE_DOMAIN + _ARRAY_9 + wire[1:-_SIGNATURE_TAIL]


def seal(
    key: KeyPair,
    *,
    kind: Kind,
    room: RoomId,
    sender_user: UserId,
    seq: int,
    hlc: Timestamp,
    content_type: str,
    body: bytes,
) -> Envelope:
    """Build and sign an envelope with the device `key`.

    Raises:
        LocalProtocolError (TooLarge / MalformedMessage as the limits say): our caller passed
        something no peer would accept.
    """
    unsigned: list[object] = [
        PROTOCOL_VERSION,
        int(kind),
        room,
        sender_user,
        key.public,
        seq,
        encode_timestamp(hlc),
        content_type,
        body,
    ]
    _check_fields(kind, room, sender_user, key.public, seq, content_type, body)
    signed = encode_canonical(unsigned)  # type: ignore[arg-type]
    signature = key.sign(ENVELOPE_DOMAIN + signed)
    wire = _ARRAY_10 + signed[1:] + _SIGNATURE_ITEM + signature
    return Envelope(
        version=PROTOCOL_VERSION,
        kind=kind,
        room=room,
        sender_user=sender_user,
        sender_device=DeviceId(key.public),
        seq=seq,
        hlc=hlc,
        content_type=content_type,
        body=body,
        signature=signature,
        wire=wire,
        message_id=MessageId(hashlib.sha256(ENVELOPE_DOMAIN + signed).digest()),
    )


def _check_fields(
    kind: int,
    room: bytes,
    user: bytes,
    device: bytes,
    seq: int,
    content_type: str,
    body: bytes,
) -> None:
    if len(room) != 32 or len(user) != KEY_BYTES or len(device) != KEY_BYTES:
        raise MalformedMessage("room, user and device ids are 32 bytes")
    if not 1 <= seq <= MAX_SEQ:
        raise MalformedMessage(f"seq {seq} outside 1..2^63-1")
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    if (
        len(content_type) > MAX_CONTENT_TYPE_BYTES
        or not content_type.isascii()
        or not content_type.isprintable()
    ):
        raise MalformedMessage("content type must be printable ASCII of at most 64 bytes")
    if kind not in Kind._value2member_map_:
        raise UnknownKind(f"unknown kind {kind}")


def _parse(data: bytes, *, canonical: bool = True) -> Envelope:
    decode = decode_canonical if canonical else read_kept
    value = decode(data, max_bytes=MAX_ENVELOPE_BYTES)
    if isinstance(value, list) and value and type(value[0]) is int and value[0] != 0:
        raise UnsupportedVersion(f"envelope version {value[0]}")
    match value:
        case [
            0,
            int() as kind,
            bytes() as room,
            bytes() as user,
            bytes() as device,
            int() as seq,
            bytes() as hlc,
            str() as content_type,
            bytes() as body,
            bytes() as signature,
        ] if len(hlc) == TIMESTAMP_BYTES and len(signature) == SIGNATURE_BYTES:
            _check_fields(kind, room, user, device, seq, content_type, body)
            signed = _signing_bytes_of_wire(data)
            return Envelope(
                version=0,
                kind=Kind(kind),
                room=RoomId(room),
                sender_user=UserId(user),
                sender_device=DeviceId(device),
                seq=seq,
                hlc=decode_timestamp(hlc),
                content_type=content_type,
                body=body,
                signature=signature,
                wire=data,
                message_id=MessageId(hashlib.sha256(signed).digest()),
            )
    raise MalformedMessage("not an envelope")


def decode_envelope(data: bytes) -> Envelope:
    """Parse and verify an envelope from a peer.

    Raises:
        TooLarge: longer than MAX_ENVELOPE_BYTES (before parsing).
        UnsupportedVersion, UnknownKind, MalformedMessage: wrong structure or encoding.
        BadSignature: the sender device did not sign these bytes.
    """
    envelope = _parse(bytes(data))
    verify_envelope(envelope)
    return envelope


def verify_envelope(envelope: Envelope) -> None:
    """Check the sender device's signature of an envelope parsed by `load_envelope`.

    Raises:
        BadSignature: the sender device did not sign these bytes.
    """
    verify_signature(
        envelope.sender_device, _signing_bytes_of_wire(envelope.wire), envelope.signature
    )


def sender_device_of(wire: bytes) -> DeviceId:
    """The sender device of an envelope this node holds verified (its store, its outbox), read
    from the wire form without parsing the rest of it.

    Raises:
        MalformedMessage and the rest of `load_envelope`'s errors: not an envelope.
    """
    start = _DEVICE_AT
    if (
        wire[:2] == _ARRAY_10 + b"\x00"
        and wire[2] < 24  # a kind of one byte
        and all(wire[at : at + len(_ID_ITEM)] == _ID_ITEM for at in _ID_ITEMS_AT)
        and len(wire) > start + KEY_BYTES
    ):
        return DeviceId(wire[start : start + KEY_BYTES])
    return _parse(bytes(wire)).sender_device


def load_envelope(data: bytes) -> Envelope:
    """Parse an envelope this node verified before it stored it: no signature check.

    Only for bytes read back from our own store; anything from the network goes through
    `decode_envelope`.
    """
    return _parse(bytes(data))


def read_stored_envelope(data: bytes) -> Envelope:
    """`load_envelope` for bytes read back from our own store, which were canonical when
    they were verified and stored: the structure and limits are checked, the encoding is not
    checked again (re-encoding to compare was most of a history read's cost)."""
    return _parse(bytes(data), canonical=False)
