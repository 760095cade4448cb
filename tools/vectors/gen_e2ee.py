"""Generate protocol/vectors/e2ee.json: key bundles, room keys, encrypted bodies (SPEC §27).

vodozemac draws its own randomness, so the Megolm session comes from a fixed pickle (below);
encryption from a given session state is deterministic (AES-CBC and Ed25519 both are).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Final

import vodozemac

from hearthmesh.protocol.e2ee import (
    EncryptedBody,
    RoomKey,
    decode_encrypted_body,
    encode_encrypted_body,
    encode_key_bundle,
    encode_room_key,
    encrypt_content,
    issue_key_bundle,
    session_id_bytes,
)
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import DeviceId, UserId, keypair_from_seed

from .common import VECTORS_DIR, fixed_seed, write_vectors

__all__ = ["GROUP_SESSION_PICKLE", "PICKLE_KEY", "curve_public", "generate"]

PICKLE_KEY: Final = fixed_seed("e2ee-pickle")
GROUP_SESSION_PICKLE: Final = (
    "3ZY1j1uzjGI5ybnQCyH9M+CRm/2QO3EivihshlTzWg0N/hZtpLnUx178QNjs6SxbdFTh4Bfz0H6jJUdmC2+wPjl3xiXbZP"
    "C22Z6HwzxXR502s9XifEo1FoGrQ0yh/F539gALz8oohknjGxfGPdZtUZo3jDRCz2yGoIbWuwMrgw76uGBm/4ll8mMrtpld"
    "aJ/oPk6UjP/1nW5esIg+7i4Db+Wf8zhx5LWqAlTPW1DN+5X6TX8h+IEI0IXVs6VxIi8Ga8t62skSoJmDNomSl6jbFdKFqK"
    "43UQUDIbDxJUeDDbY8AXUEmK3tm5OPL33EskQTus1mCGhDQKZ95G31D4JjVn7AIj/1zj8O+n1sFooqYPMinvQS34sKQR9x"
    "72cDa7xiZy/HVbfPO3FMI6y1MiCPvidN6/oJZGgmR9efTml5s2BMr/7vkw4BGMUj0AjXQ5+2LbEAXbpkGAQuYbP3A9zAE4"
    "1e+0e0y4l2vUjGWTmrflVWJurPF9IhmxmaWT4uzlbMcFrp7Pr/Bg+dRBNAOusZLOeLWT2YcHvN2LFV45LgAzWnC8dGVttC"
    "yfDy8ztW+W9eDHa8OxHtBzCCUmlhyDlqXK5EKM7GLoVraa2AIBgtltwPSvPfcqZimBpTHl25ihgWIGj54a0erjhQYFKsmR"
    "qPCBbzl13EU0wHIJ/8nZ9c0pQPIrzuO7gjFEYxR8df5dhmcMiSrAoim989oSavoa1acXQbqsFg8uuW//4c7COEBbZc3+n8"
    "dgZ+ZlHarP3zmjCO3d48wWTNdLZM0MKk2ot/D64s0FqgiUnakOb2nWPOUQd1fzZb1T22Fhg3IYbIOoyEPfP+/meH0dblxw"
    "vuqAViOqMrIBEVDBNPsNWVv1xh+d6xC++6xt10xtY6O0SI5aNVi2iGSYpY6zE"
)
"""A Megolm outbound session at index 0, pickled once with PICKLE_KEY."""


def curve_public(label: str) -> bytes:
    """The Curve25519 public key of a fixed secret."""
    secret = vodozemac.Curve25519SecretKey.from_bytes(fixed_seed(label))
    return bytes(secret.public_key().to_bytes())


def _b64(data: str) -> bytes:
    return base64.b64decode(data + "=" * (-len(data) % 4))


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Compute every expectation with the implementation, for review and for other impls."""
    device = keypair_from_seed(fixed_seed("e2ee-device"))
    bundle = issue_key_bundle(
        device,
        identity_key=curve_public("e2ee-identity"),
        fallback_key=curve_public("e2ee-fallback"),
        issued_ms=1_700_000_000_000,
    )
    bundle_hex = encode_key_bundle(bundle).hex()
    forged = bytearray(bytes.fromhex(bundle_hex))
    forged[-1] ^= 1

    session = vodozemac.GroupSession.from_pickle(GROUP_SESSION_PICKLE, PICKLE_KEY)
    session_key = _b64(session.session_key.to_base64())
    room_key = RoomKey(
        room=RoomId(fixed_seed("e2ee-room")),
        session_id=session_id_bytes(session.session_id),
        session_key=session_key,
        first_index=0,
        sender_user=UserId(fixed_seed("e2ee-user")),
        sender_device=DeviceId(device.public),
        sender_curve=bundle.identity_key,
        recipient_device=DeviceId(fixed_seed("e2ee-recipient")),
        recipient_curve=curve_public("e2ee-recipient-identity"),
    )
    bodies = [encrypt_content(session, "text/plain", text.encode())[0] for text in ("hi", "again")]
    flipped = decode_encrypted_body(bodies[0])
    tampered = bytearray(flipped.ciphertext)
    tampered[10] ^= 1
    tampered_body = encode_encrypted_body(
        EncryptedBody(
            algorithm=flipped.algorithm, session_id=flipped.session_id, ciphertext=bytes(tampered)
        )
    )
    valid: list[dict[str, Any]] = [
        {
            "op": "key_bundle",
            "device_seed": device.seed.hex(),
            "identity_key": bundle.identity_key.hex(),
            "fallback_key": bundle.fallback_key.hex(),
            "issued_ms": bundle.issued_ms,
            "expect_hex": bundle_hex,
            "note": "a bundle signed by the device key (SPEC §27.1)",
        },
        {
            "op": "room_key",
            "session_key": session_key.hex(),
            "expect_hex": encode_room_key(room_key).hex(),
            "note": "the Olm plaintext of a share; sender key = the bundle's identity key",
        },
        *(
            {
                "op": "decrypt",
                "session_key": session_key.hex(),
                "body_hex": body.hex(),
                "expect_index": index,
                "expect_content_type": "text/plain",
                "expect_body_hex": text.encode().hex(),
                "note": f"Megolm message {index} of the pickled session",
            }
            for index, (body, text) in enumerate(zip(bodies, ("hi", "again"), strict=True))
        ),
    ]
    invalid: list[dict[str, Any]] = [
        {
            "op": "key_bundle",
            "bundle_hex": bytes(forged).hex(),
            "error": "BadSignature",
            "note": "last signature bit flipped",
        },
        {
            "op": "key_bundle",
            "bundle_hex": bundle_hex[:-2],
            "error": "MalformedMessage",
            "note": "truncated",
        },
        {
            "op": "decrypt",
            "session_key": session_key.hex(),
            "body_hex": tampered_body.hex(),
            "error": "Undecryptable",
            "note": "one ciphertext bit flipped: MAC or signature fails",
        },
    ]
    return write_vectors(
        "e2ee",
        spec="SPEC.md §27",
        function="hearthmesh.protocol.e2ee",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


if __name__ == "__main__":
    print(generate())
