"""Generate protocol/vectors/linking.json: pairing codes, requests and answers (SPEC §22)."""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.errors import InvalidIdentifier, MalformedMessage, NotAuthorized
from hearthmesh.protocol.identity import encode_certificate
from hearthmesh.protocol.linking import (
    LinkAnswer,
    LinkCode,
    LinkRequest,
    encode_link_answer,
    encode_link_code,
    encode_link_request,
    link_proof,
)

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """A code, the new device's request proven with its secret, and the primary's answer."""
    c = Cast()
    secret = fixed_seed("link-secret")[:16]
    address = f"/ip4/192.0.2.1/tcp/4001/p2p/{c.node_peer_id}"
    code = LinkCode(secret=secret, address=address, expires_ms=NOW_MS + 300_000)
    device, node_key = c.phone.public, c.node.public
    proof = link_proof(secret, device=device, node_key=node_key)
    request = LinkRequest(device=device, node_key=node_key, addrs=(address,), proof=proof)
    answer = LinkAnswer(
        certificate=encode_certificate(c.certificate(c.alice, c.phone)), home_record=b"\xa0"
    )
    text = encode_link_code(code)
    valid = [
        pin("link_code", "a code for five minutes", text=text),
        pin("link_code", "surrounding blanks are ignored", text=f"  {text}\n"),
        pin(
            "link_request",
            "proof = HMAC-SHA256(secret, domain | device | node key)",
            hex=encode_link_request(request).hex(),
            secret_hex=secret.hex(),
        ),
        pin(
            "link_answer",
            "a certificate and a home record (verified by the caller)",
            hex=encode_link_answer(answer).hex(),
        ),
    ]
    invalid = [
        refuse("link_code", InvalidIdentifier, "another prefix", text="hmlink1-" + text[8:]),
        refuse("link_code", InvalidIdentifier, "cut short: the CBOR ends early", text=text[:-6]),
        refuse(
            "link_request",
            NotAuthorized,
            "made with another secret",
            hex=encode_link_request(request).hex(),
            secret_hex=bytes(16).hex(),
        ),
        refuse(
            "link_request",
            MalformedMessage,
            "a proof of 31 bytes",
            hex=encode_canonical([0, device, node_key, [], proof[:31]]).hex(),
            secret_hex=secret.hex(),
        ),
        refuse(
            "link_request",
            MalformedMessage,
            "nine addresses",
            hex=encode_canonical([0, device, node_key, [address] * 9, proof]).hex(),
            secret_hex=secret.hex(),
        ),
        refuse(
            "link_answer", MalformedMessage, "version 1", hex=encode_canonical([1, b"", b""]).hex()
        ),
    ]
    return write_vectors(
        "linking",
        spec="SPEC.md §22",
        function="tools/vectors/codecs.py ops link_code, link_request, link_answer",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
