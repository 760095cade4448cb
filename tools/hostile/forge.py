"""What a stranger can make without any I/O: identities, valid and broken envelopes, frames.

A `Stranger` is a self-made user identity with one certified device, related to nobody: the
attacker of issue #12. `EnvelopeForge` seals valid envelopes of any kind into any room (SPEC
§5), and builds the ones a correct node must refuse: a bad signature (SPEC §5.4), a certificate
that names someone else or is signed by the wrong key (SPEC §3.3), an unknown version or kind
(SPEC §5.1, §5.2), bodies past the limits of SPEC §7. Each broken envelope breaks exactly one
rule: everything else about it is valid, so a refusal code names that rule.
State owned here: each forge's next sequence number per room.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from hearthmesh.protocol.addressing import ADDRESSED_KINDS, UNSEQUENCED
from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.content import (
    MEDIA_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    MediaRef,
    encode_media,
)
from hearthmesh.protocol.e2ee import KeyBundle
from hearthmesh.protocol.envelope import (
    ENVELOPE_DOMAIN,
    MAX_BODY_BYTES,
    Envelope,
    Kind,
    RoomId,
    seal,
)
from hearthmesh.protocol.hlc import Timestamp, encode_timestamp
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    KeyPair,
    Rng,
    UserId,
    encode_certificate,
    generate_keypair,
    issue_certificate,
)
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)

__all__ = [
    "OVERSIZED_MEMBERSHIP_BYTES",
    "EnvelopeForge",
    "Stranger",
    "certificate_of_other",
    "digest_of",
    "membership_body",
    "new_stranger",
    "oversized_membership_body",
    "random_room",
]

OVERSIZED_MEMBERSHIP_BYTES: Final = 600
"""A MEMBERSHIP body past protocol/membership.py's 512-byte limit, well inside SPEC §7's."""
UNKNOWN_KIND: Final = 99
UNKNOWN_VERSION: Final = 1
_ARRAY_10: Final = b"\x8a"
_SIGNATURE_ITEM: Final = b"\x58\x40"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stranger:
    """A self-made user identity with one device it certified itself."""

    user: KeyPair
    device: KeyPair
    certificate: DeviceCertificate

    @property
    def user_id(self) -> UserId:
        return UserId(self.user.public)

    @property
    def certificate_bytes(self) -> bytes:
        return encode_certificate(self.certificate)

    def home_record(
        self,
        *,
        peer_ids: tuple[str, ...],
        addrs: tuple[str, ...],
        now_ms: int,
        bundles: tuple[KeyBundle, ...] = (),
    ) -> bytes:
        """A home record (SPEC §13) naming `peer_ids` as this user's homes, with our device's
        key bundle when given one (SPEC §27.2)."""
        record = issue_home_record(
            self.user,
            issued_ms=now_ms,
            homes=peer_ids,
            addrs=addrs,
            devices=(self.certificate,),
            bundles=bundles,
        )
        return encode_home_record(record)


def new_stranger(rng: Rng, *, now_ms: int) -> Stranger:
    """A fresh user with a fresh certified device."""
    user, device = generate_keypair(rng), generate_keypair(rng)
    certificate = issue_certificate(user, DeviceId(device.public), created_ms=now_ms)
    return Stranger(user=user, device=device, certificate=certificate)


def random_room(rng: Rng) -> RoomId:
    """A room id nobody uses."""
    return RoomId(rng(32))


def membership_body(action: Action, target: UserId, role: Role = Role.MEMBER) -> bytes:
    """A well-formed MEMBERSHIP body (SPEC §12.1)."""
    return encode_membership(MembershipChange(action=action, target=target, role=role))


def oversized_membership_body(target: UserId) -> bytes:
    """A MEMBERSHIP body of OVERSIZED_MEMBERSHIP_BYTES: well-formed but for its size."""
    name = "x" * (OVERSIZED_MEMBERSHIP_BYTES - len(membership_body(Action.LEAVE, target)) - 2)
    return encode_canonical([int(Action.LEAVE), target, 0, b"", 0, name])


class EnvelopeForge:
    """Seals envelopes as one stranger's device, each with the next seq of its room."""

    def __init__(self, stranger: Stranger) -> None:
        self.stranger = stranger
        self._seq: defaultdict[bytes, int] = defaultdict(int)

    def _next_seq(self, room: bytes) -> int:
        self._seq[room] += 1
        return self._seq[room]

    def seal(
        self,
        kind: Kind,
        room: RoomId,
        body: bytes,
        *,
        now_ms: int,
        content_type: str = TEXT_CONTENT_TYPE,
    ) -> Envelope:
        """A valid envelope of `kind` in `room`, signed by our device (SPEC §5); a RECEIPT or a
        ROOM_KEY takes no number of the sequence (SPEC §8.5)."""
        return seal(
            self.stranger.device,
            kind=kind,
            room=room,
            sender_user=self.stranger.user_id,
            seq=UNSEQUENCED if kind in ADDRESSED_KINDS else self._next_seq(room),
            hlc=Timestamp(wall_ms=now_ms, counter=0),
            content_type=content_type,
            body=body,
        )

    def message(self, room: RoomId, text: str, *, now_ms: int) -> Envelope:
        return self.seal(Kind.MESSAGE, room, text.encode(), now_ms=now_ms)

    def membership(
        self, room: RoomId, action: Action, target: UserId, *, now_ms: int, role: Role = Role.MEMBER
    ) -> Envelope:
        """A MEMBERSHIP event as the stranger (authorized or not: the receiver decides)."""
        return self.seal(
            Kind.MEMBERSHIP,
            room,
            membership_body(action, target, role),
            now_ms=now_ms,
            content_type=MEMBERSHIP_CONTENT_TYPE,
        )

    def oversized_membership(self, room: RoomId, *, now_ms: int) -> Envelope:
        """A signed MEMBERSHIP envelope whose body is past the membership body limit."""
        return self.seal(
            Kind.MEMBERSHIP,
            room,
            oversized_membership_body(self.stranger.user_id),
            now_ms=now_ms,
            content_type=MEMBERSHIP_CONTENT_TYPE,
        )

    def media_message(self, room: RoomId, digest: bytes, *, now_ms: int) -> Envelope:
        """A MESSAGE naming a blob by digest (SPEC §25): what the stranger claims to send."""
        ref = MediaRef(type="file", digest=digest, content_type="application/octet-stream", size=1)
        return self.seal(
            Kind.MESSAGE, room, encode_media(ref), now_ms=now_ms, content_type=MEDIA_CONTENT_TYPE
        )

    def raw(
        self,
        *,
        room: RoomId,
        now_ms: int,
        kind: int = int(Kind.MESSAGE),
        version: int = 0,
        body: bytes = b"hi",
        content_type: str = TEXT_CONTENT_TYPE,
        sender_user: bytes | None = None,
        signer: KeyPair | None = None,
        seq: int | None = None,
    ) -> bytes:
        """Envelope wire bytes with any field values, correctly signed by `signer` (our device
        by default), bypassing every check `seal` makes: unknown kinds and versions, bodies
        past MAX_BODY_BYTES, another sender user, any `seq` (default: the room's next, for
        any kind: a RECEIPT so has the broadcast form of SPEC §20.7)."""
        key = signer or self.stranger.device
        fields: list[CborValue] = [
            version,
            kind,
            room,
            sender_user if sender_user is not None else self.stranger.user_id,
            key.public,
            self._next_seq(room) if seq is None else seq,
            encode_timestamp(Timestamp(wall_ms=now_ms, counter=0)),
            content_type,
            body,
        ]
        signed = encode_canonical(fields)
        signature = key.sign(ENVELOPE_DOMAIN + signed)
        return _ARRAY_10 + signed[1:] + _SIGNATURE_ITEM + signature

    def bad_signature(self, room: RoomId, *, now_ms: int) -> bytes:
        """A MESSAGE whose signature does not verify (one bit flipped): BAD_SIGNATURE."""
        wire = bytearray(self.message(room, "forged", now_ms=now_ms).wire)
        wire[-1] ^= 0x01
        return bytes(wire)

    def unknown_kind(self, room: RoomId, *, now_ms: int) -> bytes:
        """A signed envelope of a kind SPEC §5.2 does not list: UNKNOWN_KIND."""
        return self.raw(room=room, now_ms=now_ms, kind=UNKNOWN_KIND)

    def unknown_version(self, room: RoomId, *, now_ms: int) -> bytes:
        """A signed envelope of protocol version 1: UNSUPPORTED_VERSION."""
        return self.raw(room=room, now_ms=now_ms, version=UNKNOWN_VERSION)

    def oversized_body(self, room: RoomId, *, now_ms: int) -> bytes:
        """A signed MESSAGE with one byte more than MAX_BODY_BYTES: TOO_LARGE."""
        return self.raw(room=room, now_ms=now_ms, body=b"x" * (MAX_BODY_BYTES + 1))

    def impersonation(self, room: RoomId, victim: UserId, *, now_ms: int) -> tuple[bytes, bytes]:
        """A MESSAGE claiming to come from `victim`'s user, with a device certificate for it
        that our user key signed (not the victim's): (certificate, envelope), BAD_CERTIFICATE."""
        forged = DeviceCertificate(
            version=0,
            user=victim,
            device=DeviceId(self.stranger.device.public),
            created_ms=now_ms,
            expires_ms=None,
            signature=self.stranger.user.sign(b"not the victim's key"),
        )
        wire = self.raw(room=room, now_ms=now_ms, sender_user=victim)
        return encode_certificate(forged), wire


def certificate_of_other(rng: Rng, *, now_ms: int) -> bytes:
    """A valid certificate of another stranger: sent with our envelope it names someone
    else's device (NOT_AUTHORIZED)."""
    return new_stranger(rng, now_ms=now_ms).certificate_bytes


def digest_of(data: bytes) -> bytes:
    """The SHA-256 digest a media blob is named by (SPEC §25)."""
    return hashlib.sha256(data).digest()
