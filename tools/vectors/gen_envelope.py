"""Generate protocol/vectors/envelope.json: sealed envelopes and rejected encodings (SPEC §5-7).

Size-limit cases (a body at and past MAX_BODY_BYTES, input past MAX_ENVELOPE_BYTES) are named
tests in tests/protocol/test_envelope.py rather than 130 KB of hex here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import KeyPair, UserId, keypair_from_seed
from hearthmesh.protocol.rooms import direct_room_id

from .common import VECTORS_DIR, fixed_seed, write_vectors
from .data_cases import envelope_fields

__all__ = ["generate"]


def _case(envelope: Envelope, device: KeyPair, note: str) -> dict[str, Any]:
    return {
        "device_seed_hex": device.seed.hex(),
        "fields": envelope_fields(envelope),
        "wire_hex": envelope.wire.hex(),
        "message_id_hex": envelope.message_id.hex(),
        "note": note,
    }


def _reencoded(items: list[Any]) -> str:
    return encode_canonical(items).hex()


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Valid envelopes of several kinds and every class of rejected input."""
    alice = keypair_from_seed(fixed_seed("alice"))
    bob = keypair_from_seed(fixed_seed("bob"))
    phone = keypair_from_seed(fixed_seed("alice-phone"))
    alice_id = UserId(alice.public)
    room = direct_room_id(alice_id, UserId(bob.public))
    hlc = Timestamp(wall_ms=1_700_000_000_000, counter=0)

    def make(kind: Kind, seq: int, content_type: str, body: bytes, r: RoomId = room) -> Envelope:
        return seal(
            phone,
            kind=kind,
            room=r,
            sender_user=alice_id,
            seq=seq,
            hlc=hlc,
            content_type=content_type,
            body=body,
        )

    text = make(Kind.MESSAGE, 1, "text/plain", "hello, bob 👋".encode())
    valid = [
        _case(text, phone, "a text message"),
        _case(
            make(Kind.RECALL, 2, "application/x-hearthmesh-recall", text.message_id),
            phone,
            "a recall naming the message id it withdraws",
        ),
        _case(make(Kind.TYPING, 3, "", b""), phone, "an ephemeral kind with an empty body"),
    ]
    fields: list[Any] = [
        0,
        1,
        room,
        alice_id,
        phone.public,
        1,
        bytes.fromhex("0000018bcfe5680000000000"),
        "text/plain",
        b"hi",
    ]
    good = make(Kind.MESSAGE, 1, "text/plain", b"hi")
    flipped = bytearray(good.wire)
    flipped[-1] ^= 0x01
    body_flipped = bytearray(good.wire)
    body_flipped[-67] ^= 0x01
    sig = good.signature
    invalid: list[dict[str, Any]] = [
        {"wire_hex": flipped.hex(), "error": "BadSignature", "note": "signature bit flipped"},
        {
            "wire_hex": body_flipped.hex(),
            "error": "BadSignature",
            "note": "body bit flipped after signing",
        },
        {
            "wire_hex": _reencoded(
                [
                    0,
                    1,
                    room,
                    UserId(bob.public),
                    phone.public,
                    1,
                    bytes(12),
                    "text/plain",
                    b"hi",
                    sig,
                ]
            ),
            "error": "BadSignature",
            "note": "sender user swapped: the device never signed that",
        },
        {
            "wire_hex": _reencoded([1, *fields[1:], sig]),
            "error": "UnsupportedVersion",
            "note": "version 1",
        },
        {
            "wire_hex": _reencoded([0, 99, *fields[2:], sig]),
            "error": "UnknownKind",
            "note": "kind 99",
        },
        {
            "wire_hex": _reencoded([0, 1, room, alice_id, phone.public, 0, *fields[6:], sig]),
            "error": "MalformedMessage",
            "note": "sequence numbers start at 1",
        },
        {
            "wire_hex": _reencoded([*fields, sig, b""]),
            "error": "MalformedMessage",
            "note": "eleven fields",
        },
        {
            "wire_hex": good.wire.hex() + "00",
            "error": "MalformedMessage",
            "note": "one trailing byte",
        },
        {"wire_hex": good.wire[:-1].hex(), "error": "MalformedMessage", "note": "truncated"},
        {
            "wire_hex": "8a1800" + good.wire[2:].hex(),
            "error": "MalformedMessage",
            "note": "version 0 in a two-byte head: not the shortest form (RFC 8949 §4.2.1)",
        },
        {
            "wire_hex": "9f" + good.wire[1:].hex() + "ff",
            "error": "MalformedMessage",
            "note": "indefinite-length array",
        },
        {"wire_hex": "a0", "error": "MalformedMessage", "note": "a map"},
        {"wire_hex": "c1" + "1a00000000", "error": "MalformedMessage", "note": "a tag"},
        {"wire_hex": "81" * 100, "error": "MalformedMessage", "note": "deep nesting"},
        {"wire_hex": "", "error": "MalformedMessage", "note": "empty input"},
    ]
    return write_vectors(
        "envelope",
        spec="SPEC.md §5, §6, §7",
        function="hearthmesh.protocol.envelope.decode_envelope",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
