"""Generate protocol/vectors/identity.json: keys, id text forms and certificates (SPEC §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    device_id_text,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
    user_id_text,
)
from hearthmesh.protocol.rooms import direct_room_id

from .common import VECTORS_DIR, fixed_seed, write_vectors

__all__ = ["generate"]

_CREATED_MS = 1_700_000_000_000
_DAY_MS = 86_400_000


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Keys from fixed seeds, their ids, a direct room id and certificates."""
    alice = keypair_from_seed(fixed_seed("alice"))
    bob = keypair_from_seed(fixed_seed("bob"))
    phone = keypair_from_seed(fixed_seed("alice-phone"))
    alice_id = UserId(alice.public)
    valid: list[dict[str, Any]] = []
    for name, key in (("alice", alice), ("bob", bob), ("alice-phone", phone)):
        valid.append(
            {
                "op": "keypair",
                "seed_hex": key.seed.hex(),
                "public_hex": key.public.hex(),
                "user_id": user_id_text(UserId(key.public)),
                "device_id": device_id_text(DeviceId(key.public)),
                "note": f"{name}: Ed25519 public key and both text forms",
            }
        )
    valid.append(
        {
            "op": "direct_room",
            "a_hex": alice.public.hex(),
            "b_hex": bob.public.hex(),
            "expect_hex": direct_room_id(alice_id, UserId(bob.public)).hex(),
            "note": "same id whichever user computes it",
        }
    )
    cert = issue_certificate(
        alice, DeviceId(phone.public), created_ms=_CREATED_MS, expires_ms=_CREATED_MS + _DAY_MS
    )
    forever = issue_certificate(alice, DeviceId(phone.public), created_ms=_CREATED_MS)
    for c, note in ((cert, "expires after one day"), (forever, "no expiry")):
        valid.append(
            {
                "op": "certificate",
                "hex": encode_certificate(c).hex(),
                "now_ms": _CREATED_MS + 1000,
                "note": note,
            }
        )
    cert_hex = encode_certificate(cert).hex()
    forged = bytearray(encode_certificate(cert))
    forged[-1] ^= 1
    invalid: list[dict[str, Any]] = [
        {
            "op": "certificate",
            "hex": forged.hex(),
            "now_ms": _CREATED_MS + 1000,
            "error": "BadCertificate",
            "note": "one signature bit flipped",
        },
        {
            "op": "certificate",
            "hex": cert_hex,
            "now_ms": _CREATED_MS + _DAY_MS,
            "error": "BadCertificate",
            "note": "expired: now equals expires_ms",
        },
        {
            "op": "certificate",
            "hex": cert_hex,
            "now_ms": _CREATED_MS - 60_001,
            "error": "ClockSkew",
            "note": "created more than MAX_DRIFT_MS in the future",
        },
        {
            "op": "certificate",
            "hex": cert_hex[:-2],
            "now_ms": _CREATED_MS,
            "error": "MalformedMessage",
            "note": "truncated by one byte",
        },
        {
            "op": "user_id",
            "text": "u" + "a" * 51,
            "error": "InvalidIdentifier",
            "note": "51 base32 characters: too short",
        },
        {
            "op": "user_id",
            "text": user_id_text(alice_id).upper(),
            "error": "InvalidIdentifier",
            "note": "uppercase is not the canonical form",
        },
        {
            "op": "user_id",
            "text": "d" + user_id_text(alice_id)[1:],
            "error": "InvalidIdentifier",
            "note": "a device prefix where a user id is expected",
        },
        {
            "op": "user_id",
            "text": user_id_text(alice_id)[:-1] + "b",
            "error": "InvalidIdentifier",
            "note": "non-zero spare bits: a second spelling",
        },
    ]
    return write_vectors(
        "identity",
        spec="SPEC.md §3",
        function="hearthmesh.protocol.identity / hearthmesh.protocol.rooms",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
