"""Generate protocol/vectors/claim.json: key claims on `/hearthmesh/keys/0` (SPEC §27.2.2)."""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.errors import (
    BadSignature,
    KeyMismatch,
    MalformedMessage,
    NotFound,
    TooLarge,
)
from hearthmesh.protocol.identity import DeviceId, KeyPair

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """alice's phone's keys claimed by another device: the REQUEST, ANSWERs with and without a
    one-time key, an ERROR, and the answers an asker must refuse (keys of another device, a
    broken signature, past 1,024 bytes)."""
    c = Cast()
    phone = DeviceId(c.phone.public)

    def bundle_of(device: KeyPair) -> bytes:
        issued = e2ee.issue_key_bundle(
            device,
            identity_key=fixed_seed("claim-identity-key"),
            fallback_key=fixed_seed("claim-fallback-key"),
            issued_ms=NOW_MS,
        )
        return e2ee.encode_key_bundle(issued)

    bundle = bundle_of(c.phone)
    one_time = e2ee.encode_one_time_key(
        e2ee.issue_one_time_key(c.phone, fixed_seed("claim-one-time-key"))
    )
    laptop_one_time = e2ee.encode_one_time_key(
        e2ee.issue_one_time_key(c.laptop, fixed_seed("claim-one-time-key"))
    )
    flipped = one_time[:-1] + bytes([one_time[-1] ^ 1])

    def answer(bundle_bytes: bytes, key: bytes | None) -> str:
        return e2ee.encode_claim_answer(
            e2ee.ClaimAnswer(bundle=bundle_bytes, one_time_key=key)
        ).hex()

    device_hex = phone.hex()
    valid = [
        pin("claim_request", "keys of alice's phone", hex=e2ee.encode_claim_request(phone).hex()),
        pin(
            "claim_answer",
            "its bundle and one one-time key, both signed by the phone",
            hex=answer(bundle, one_time),
            device_hex=device_hex,
        ),
        pin(
            "claim_answer",
            "the pool is empty: no one-time key (the asker uses the fallback key)",
            hex=answer(bundle, None),
            device_hex=device_hex,
        ),
        pin(
            "claim_answer",
            "a refusal: ERROR NOT_FOUND (a device the home does not serve)",
            hex=e2ee.encode_claim_error(NotFound("not a device of this home")).hex(),
            device_hex=device_hex,
        ),
    ]
    invalid = [
        refuse(
            "claim_request",
            MalformedMessage,
            "a device of 31 bytes",
            hex=encode_canonical([1, bytes(phone)[:31]]).hex(),
        ),
        refuse(
            "claim_request",
            MalformedMessage,
            "an ANSWER's tag",
            hex=encode_canonical([2, bytes(phone)]).hex(),
        ),
        refuse(
            "claim_answer",
            KeyMismatch,
            "the bundle of another device than the one asked for",
            hex=answer(bundle_of(c.laptop), None),
            device_hex=device_hex,
        ),
        refuse(
            "claim_answer",
            KeyMismatch,
            "the phone's bundle with another device's one-time key",
            hex=answer(bundle, laptop_one_time),
            device_hex=device_hex,
        ),
        refuse(
            "claim_answer",
            BadSignature,
            "the one-time key's last signature bit flipped",
            hex=answer(bundle, flipped),
            device_hex=device_hex,
        ),
        refuse(
            "claim_answer",
            MalformedMessage,
            "a one-time key that is no key",
            hex=answer(bundle, b"\x00" * 8),
            device_hex=device_hex,
        ),
        refuse(
            "claim_answer",
            TooLarge,
            "past 1,024 bytes",
            hex=answer(bundle, bytes(900)),
            device_hex=device_hex,
        ),
    ]
    return write_vectors(
        "claim",
        spec="SPEC.md §27.1, §27.2",
        function="tools/vectors/codecs.py ops claim_request, claim_answer",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
