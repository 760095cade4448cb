"""Generate protocol/vectors/signals.json: pushes on `/hearthmesh/signals/0` (SPEC §32.4.1).

bob's home takes alice's presence and typing: she is his contact. Each case names the
receiving home's contacts and blocked users; the push is the gossip payload of §14.1.
"""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import TYPING_CONTENT_TYPE, encode_typing
from hearthmesh.protocol.envelope import MAX_ENVELOPE_BYTES, Kind
from hearthmesh.protocol.errors import (
    BadSignature,
    MalformedMessage,
    NotAContact,
    NotAuthorized,
    TooLarge,
)
from hearthmesh.protocol.gossip import PresenceStatus, encode_gossip, encode_presence

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors
from .gen_homes import presence_wire, record_bytes

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Valid pushes from a contact; refused ones with their codes (`NOT_A_CONTACT` is dropped
    unanswered and not charged; the rest are charged, §11.6)."""
    c = Cast()
    alice = c.user(c.alice).hex()
    cert = c.certificate_bytes(c.alice, c.phone)
    record = record_bytes(c, c.alice, c.phone)

    def push(wire: bytes, certificate: bytes = cert) -> str:
        return encode_gossip(certificate, wire).hex()

    def presence(status: PresenceStatus, ttl_ms: int = 60_000, body: bytes | None = None) -> str:
        body = encode_presence(status, ttl_ms, record) if body is None else body
        return push(presence_wire(c, body, c.alice, c.phone))

    def typing(body: bytes) -> str:
        envelope = c.seal(
            c.alice,
            c.phone,
            kind=Kind.TYPING,
            room=c.direct_room,
            seq=1,
            body=body,
            content_type=TYPING_CONTENT_TYPE,
        )
        return push(envelope.wire)

    at_bob = {"now_ms": NOW_MS, "contacts_hex": [alice], "blocked_hex": []}
    online = presence(PresenceStatus.ONLINE)
    message = c.seal(
        c.alice,
        c.phone,
        kind=Kind.MESSAGE,
        room=c.direct_room,
        seq=1,
        body=b"hi",
        content_type="text/plain",
    ).wire
    valid = [
        pin("signal", "a contact online for a minute, with her record", hex=online, **at_bob),
        pin("signal", "a contact gone offline", hex=presence(PresenceStatus.OFFLINE, 1), **at_bob),
        pin(
            "signal",
            "status RECORD: taken, says nothing of presence",
            hex=presence(PresenceStatus.RECORD),
            **at_bob,
        ),
        pin(
            "signal",
            "a contact typing in our direct room",
            hex=typing(encode_typing(True)),
            **at_bob,
        ),
        pin("signal", "a contact stopped typing", hex=typing(encode_typing(False)), **at_bob),
    ]
    invalid = [
        refuse(
            "signal",
            NotAContact,
            "from a user who is no contact",
            hex=online,
            now_ms=NOW_MS,
            contacts_hex=[],
            blocked_hex=[],
        ),
        refuse(
            "signal",
            NotAContact,
            "from a contact our user blocked",
            hex=online,
            now_ms=NOW_MS,
            contacts_hex=[alice],
            blocked_hex=[alice],
        ),
        refuse(
            "signal",
            MalformedMessage,
            "a MESSAGE envelope: only PRESENCE or TYPING",
            hex=push(message),
            **at_bob,
        ),
        refuse(
            "signal",
            MalformedMessage,
            "a typing body of 2",
            hex=typing(encode_canonical([2])),
            **at_bob,
        ),
        refuse(
            "signal",
            NotAuthorized,
            "bob's record in alice's presence",
            hex=presence(
                PresenceStatus.ONLINE,
                body=encode_presence(
                    PresenceStatus.ONLINE, 60_000, record_bytes(c, c.bob, c.laptop)
                ),
            ),
            **at_bob,
        ),
        refuse(
            "signal",
            MalformedMessage,
            "a presence ttl over one hour",
            hex=presence(PresenceStatus.ONLINE, ttl_ms=3_600_001),
            **at_bob,
        ),
        refuse(
            "signal",
            NotAuthorized,
            "bob's certificate on alice's envelope",
            hex=push(
                presence_wire(
                    c, encode_presence(PresenceStatus.ONLINE, 60_000, record), c.alice, c.phone
                ),
                c.certificate_bytes(c.bob, c.laptop),
            ),
            **at_bob,
        ),
        refuse(
            "signal",
            BadSignature,
            "the envelope's signature bit flipped",
            hex=push(message[:-1] + bytes([message[-1] ^ 1])),
            **at_bob,
        ),
        refuse(
            "signal",
            MalformedMessage,
            "not [certificate, envelope]",
            hex=encode_canonical([cert]).hex(),
            **at_bob,
        ),
        refuse(
            "signal",
            TooLarge,
            "a payload past the gossip bound",
            hex=encode_canonical([cert, bytes(MAX_ENVELOPE_BYTES + 1024)]).hex(),
            **at_bob,
        ),
    ]
    return write_vectors(
        "signals",
        spec="SPEC.md §32.4.1",
        function="tools/vectors/codecs.py op signal: decode_signal, check_signal_sender",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
