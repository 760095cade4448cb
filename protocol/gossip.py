"""What travels on gossipsub topics (SPEC §14): signed envelopes with their sender's proof.

Gossip is the fast, at-most-once path. A room topic carries the room's envelopes; the presence
topic carries PRESENCE envelopes whose body holds the user's home record, so every node learns
where each user's inbox lives. Since SPEC §32.4 the topic says nothing of presence (status
RECORD): online, offline and typing go to contacts alone, on `SIGNALS_PROTOCOL` streams, as the
same `[certificate, envelope]` payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .certificate_cache import VerifiedCertificates
from .envelope import MAX_ENVELOPE_BYTES, Envelope, Kind, RoomId, load_envelope, verify_envelope
from .errors import MalformedMessage, NotAuthorized, RemoteProtocolError
from .home_record import MAX_HOME_RECORD_BYTES, HomeRecord, decode_home_record, verify_home_record
from .identity import DeviceCertificate, decode_certificate

__all__ = [
    "MAX_GOSSIP_BYTES",
    "PRESENCE_CONTENT_TYPE",
    "PRESENCE_TOPIC",
    "SIGNALS_PROTOCOL",
    "GossipItem",
    "Presence",
    "PresenceStatus",
    "decode_gossip",
    "decode_presence",
    "encode_gossip",
    "encode_presence",
    "gossip_message_id",
    "load_gossip",
    "room_topic",
]

PRESENCE_TOPIC: Final = "/hearthmesh/presence/0"
PRESENCE_CONTENT_TYPE: Final = "application/x-hearthmesh-presence"
SIGNALS_PROTOCOL: Final = "/hearthmesh/signals/0"
"""One frame per stream, one way: a PRESENCE or TYPING payload for a contact (SPEC §32.4)."""
MAX_GOSSIP_BYTES: Final = MAX_ENVELOPE_BYTES + 1024
_MESSAGE_ID_MAX_BYTES: Final = 1 << 20
"""What the message id function reads of a payload: the most a gossip message can be. The
tighter MAX_GOSSIP_BYTES is the validator's to enforce, with its charge (SPEC §14)."""


def room_topic(room: RoomId) -> str:
    """The gossipsub topic of a room: `/hearthmesh/room/0/<hex room id>`."""
    return f"/hearthmesh/room/0/{room.hex()}"


def gossip_message_id(data: bytes) -> bytes:
    """The gossipsub message id of a payload: its envelope's message id (SPEC §5.5), so one
    envelope is one gossip message everywhere, whoever published it and whenever.

    Raises:
        RemoteProtocolError: not a gossip payload `[certificate, envelope]`.
    """
    value = decode_canonical(data, max_bytes=_MESSAGE_ID_MAX_BYTES)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], bytes):
        return load_envelope(value[1]).message_id
    raise RemoteProtocolError("not a gossip payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipItem:
    """A verified envelope with the certificate that ties its device to its user."""

    certificate: DeviceCertificate
    envelope: Envelope


def encode_gossip(certificate: bytes, envelope_wire: bytes) -> bytes:
    """CBOR [certificate, envelope]."""
    return encode_canonical([certificate, envelope_wire])


def _parse_gossip(data: bytes) -> tuple[DeviceCertificate, Envelope]:
    match decode_canonical(data, max_bytes=MAX_GOSSIP_BYTES):
        case [bytes() as cert_bytes, bytes() as wire]:
            pass
        case _:
            raise MalformedMessage("gossip payload is [certificate, envelope]")
    certificate = decode_certificate(cert_bytes)
    envelope = load_envelope(wire)
    if (certificate.user, certificate.device) != (envelope.sender_user, envelope.sender_device):
        raise NotAuthorized("the certificate does not name this sender")
    return certificate, envelope


def load_gossip(data: bytes) -> GossipItem:
    """Parse a payload that this node's topic validator already verified: no signature checks.

    Only for messages handed over by our own gossipsub after validation (SPEC §14.1).
    """
    certificate, envelope = _parse_gossip(data)
    return GossipItem(certificate=certificate, envelope=envelope)


def decode_gossip(
    data: bytes, *, now_ms: int, certificates: VerifiedCertificates | None = None
) -> GossipItem:
    """Parse and verify a gossip payload: the envelope's signature and its sender's certificate
    (its signature checked once if `certificates` remembers it).

    Raises:
        RemoteProtocolError subclasses: TooLarge, MalformedMessage, BadSignature,
        BadCertificate, NotAuthorized (certificate of another device or user).
    """
    certificate, envelope = _parse_gossip(data)
    seen = VerifiedCertificates() if certificates is None else certificates
    seen.verify(certificate, now_ms=now_ms)
    verify_envelope(envelope)
    return GossipItem(certificate=certificate, envelope=envelope)


class PresenceStatus(IntEnum):
    """SPEC §14.2."""

    ONLINE = 1
    OFFLINE = 2
    RECORD = 3
    """The home record alone, for the mesh-wide topic: says nothing of presence (SPEC §32.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    """The body of a PRESENCE envelope."""

    status: PresenceStatus
    ttl_ms: int
    """Online until this long after the envelope's HLC unless renewed."""
    home_record: HomeRecord


def encode_presence(status: PresenceStatus, ttl_ms: int, home_record: bytes) -> bytes:
    """CBOR [status, ttl_ms, home record]."""
    return encode_canonical([int(status), ttl_ms, home_record])


def decode_presence(envelope: Envelope, *, now_ms: int) -> Presence:
    """Parse and verify the body of a PRESENCE envelope, including its home record.

    Raises:
        MalformedMessage, BadSignature, BadCertificate, NotAuthorized (a record of another user).
    """
    if envelope.kind is not Kind.PRESENCE:
        raise MalformedMessage("not a presence envelope")
    match decode_canonical(envelope.body, max_bytes=MAX_HOME_RECORD_BYTES + 64):
        case [int() as status, int() as ttl_ms, bytes() as record_bytes] if (
            status in PresenceStatus._value2member_map_ and 0 < ttl_ms <= 3_600_000
        ):
            pass
        case _:
            raise MalformedMessage("presence body is [status, ttl_ms, home record]")
    record = decode_home_record(record_bytes)
    verify_home_record(record, now_ms=now_ms)
    if record.user != envelope.sender_user:
        raise NotAuthorized("a home record of another user")
    return Presence(status=PresenceStatus(status), ttl_ms=ttl_ms, home_record=record)
