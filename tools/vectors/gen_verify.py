"""Generate protocol/vectors/verify.json: the frames of `/hearthmesh/verify/0` (SPEC §29.2)
and the initiator's commitment check (§29.3.1).

The SAS exchange itself runs on ephemeral X25519 keys (vodozemac draws them), so the strings
and MACs are tested by driving two machines (tests/protocol/test_verification.py), not
pinned; these pin the frames' forms, what a decoder must refuse, and which responder KEY an
ACCEPT's commitment admits (a hash of public values: pinnable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.errors import ErrorCode, MalformedMessage, SasMismatch, TooLarge
from hearthmesh.protocol.verification import (
    Accept,
    Cancel,
    Done,
    KeyShare,
    Mac,
    Start,
    VerifyFrame,
    commitment_of,
    encode_verify_frame,
)

from .cast import Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """alice's phone verifying bob's laptop: one frame of each type, then broken ones."""
    c = Cast()
    flow = fixed_seed("verify-flow")[:16]
    sas_key = fixed_seed("verify-sas-key")  # 32 bytes standing in for an X25519 public key
    start = Start(flow=flow, user=c.alice.public, device=c.phone.public)
    start_bytes = encode_verify_frame(start)
    commitment = commitment_of(sas_key, start_bytes)
    mac = "n5Y6cuCQBjZ6Ku/ECW0n7o+Ojr0lGJx8/gA1Nko8ly0"  # vodozemac's form: 43 characters
    frames: list[tuple[VerifyFrame, str]] = [
        (start, "START: the initiator's user and device keys"),
        (
            Accept(flow=flow, user=c.bob.public, device=c.laptop.public, commitment=commitment),
            "ACCEPT: the commitment is sha-256 of the SAS key, then START's bytes",
        ),
        (KeyShare(flow=flow, key=sas_key), "KEY: a 32-byte SAS public key"),
        (Mac(flow=flow, mac=mac), "MAC: unpadded base64"),
        (Done(flow=flow), "DONE"),
        (
            Cancel(flow=flow, code=int(ErrorCode.SAS_MISMATCH), reason="the strings differ"),
            "CANCEL with SAS_MISMATCH",
        ),
    ]
    valid = [pin("verify_frame", note, hex=encode_verify_frame(f).hex()) for f, note in frames]
    accept = Accept(flow=flow, user=c.bob.public, device=c.laptop.public, commitment=commitment)
    exchange = {"start_hex": start_bytes.hex(), "accept_hex": encode_verify_frame(accept).hex()}

    def key_frame(key: bytes, of_flow: bytes = flow) -> str:
        return encode_verify_frame(KeyShare(flow=of_flow, key=key)).hex()

    valid.append(
        pin(
            "verify_commitment",
            "the responder's KEY is the one its ACCEPT committed to over this START",
            hex=key_frame(sas_key),
            **exchange,
        )
    )
    key = c.phone.public

    def broken(value: list[CborValue], note: str) -> dict[str, Any]:
        return refuse("verify_frame", MalformedMessage, note, hex=encode_canonical(value).hex())

    other_start = Start(flow=flow, user=c.alice.public, device=c.bob.public)
    invalid = [
        refuse(
            "verify_commitment",
            SasMismatch,
            "another SAS key than the one committed to",
            hex=key_frame(fixed_seed("verify-other-sas-key")),
            **exchange,
        ),
        refuse(
            "verify_commitment",
            SasMismatch,
            "the committed key, but the commitment was over another START",
            hex=key_frame(sas_key),
            start_hex=encode_verify_frame(other_start).hex(),
            accept_hex=exchange["accept_hex"],
        ),
        refuse(
            "verify_commitment",
            MalformedMessage,
            "a KEY of another flow",
            hex=key_frame(sas_key, fixed_seed("verify-other-flow")[:16]),
            **exchange,
        ),
        broken([1, flow[:15], key, key], "a flow id of 15 bytes"),
        broken([1, flow, key[:31], key], "a user key of 31 bytes"),
        broken([3, flow, key, key], "KEY with one element too many"),
        broken([4, flow, ""], "an empty MAC"),
        broken([4, flow, "m" * 65], "a MAC of 65 characters"),
        broken([6, flow, 2**16, "x"], "a CANCEL code past 16 bits"),
        broken([6, flow, 2, "r" * 129], "a reason of 129 characters"),
        broken([7, flow], "type 7"),
        refuse(
            "verify_frame",
            TooLarge,
            "past 512 bytes, refused before parsing",
            hex=encode_canonical([6, flow, 2, "r" * 600]).hex(),
        ),
    ]
    return write_vectors(
        "verify",
        spec="SPEC.md §29.1, §29.2, §29.3.1",
        function="tools/vectors/codecs.py ops verify_frame: decode_verify_frame; "
        "verify_commitment: check_commitment",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
