"""Room-key shares: a Megolm session key sent over Olm to every member device (SPEC §27.4, §27.5).

`RoomKey` is the Olm plaintext. It names the sender's and the recipient's keys because Megolm
signs with the session's own key, not the device key: the only proof of who sent a session is
the Olm channel that delivered it, so the receiver checks the names against that channel
(`check_room_key`). `RoomKeyShares` is the body of a ROOM_KEY envelope: one Olm message per
recipient device, chunked so each body fits MAX_BODY_BYTES. Owns no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ..canonical import decode_canonical, encode_canonical
from ..envelope import MAX_BODY_BYTES, RoomId
from ..errors import KeyMismatch, MalformedMessage, UnsupportedVersion
from ..identity import KEY_BYTES, DeviceId, UserId
from .keys import (
    CURVE_KEY_BYTES,
    KeyBundle,
    decode_key_bundle,
    encode_key_bundle,
    verify_key_bundle,
)

__all__ = [
    "MAX_SESSION_KEY_BYTES",
    "ROOM_KEY_CONTENT_TYPE",
    "OlmKind",
    "RoomKey",
    "RoomKeyShares",
    "Share",
    "check_room_key",
    "check_sender_bundle",
    "chunk_shares",
    "decode_room_key",
    "decode_room_key_shares",
    "encode_room_key",
    "encode_room_key_shares",
]

ROOM_KEY_CONTENT_TYPE: Final = "application/x-hearthmesh-room-key"
"""The content type of ROOM_KEY (12) envelopes (SPEC §27.5)."""
MAX_SESSION_KEY_BYTES: Final = 256
"""A Megolm session key is 229 bytes (export: 164); room for the format to grow a little."""
_MAX_OLM_BYTES: Final = 1024
"""A room key's Olm message is about 550 bytes (pre-key) or 420 (normal)."""
_VERSION: Final = 0
_SHARE_OVERHEAD_BYTES: Final = 48
"""CBOR heads of one share: array, device string, kind, ciphertext string."""
_BODY_OVERHEAD_BYTES: Final = 256
"""CBOR heads of the body and the sender bundle (at most 256 bytes, SPEC §27.1)."""


class OlmKind:
    """Olm message types as vodozemac's `to_parts` numbers them."""

    PRE_KEY: Final = 0
    NORMAL: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomKey:
    """The Olm plaintext of a room-key share (SPEC §27.4). Field order is wire order."""

    room: RoomId
    session_id: bytes
    """The Megolm session's Ed25519 key, 32 bytes: it signs every message of the session."""
    session_key: bytes
    """vodozemac's SessionKey bytes (base64-decoded)."""
    first_index: int
    sender_user: UserId
    sender_device: DeviceId
    sender_curve: bytes
    recipient_device: DeviceId
    recipient_curve: bytes


def encode_room_key(key: RoomKey) -> bytes:
    """CBOR [version, room, session id, session key, first index, sender user, sender device,
    sender curve, recipient device, recipient curve]."""
    return encode_canonical(
        [
            _VERSION,
            key.room,
            key.session_id,
            key.session_key,
            key.first_index,
            key.sender_user,
            key.sender_device,
            key.sender_curve,
            key.recipient_device,
            key.recipient_curve,
        ]
    )


def decode_room_key(data: bytes) -> RoomKey:
    """Parse a decrypted room-key payload. Raises MalformedMessage or UnsupportedVersion."""
    match decode_canonical(data, max_bytes=1024):
        case [
            int() as version,
            bytes() as room,
            bytes() as session_id,
            bytes() as session_key,
            int() as first_index,
            bytes() as sender_user,
            bytes() as sender_device,
            bytes() as sender_curve,
            bytes() as recipient_device,
            bytes() as recipient_curve,
        ]:
            if version != _VERSION:
                raise UnsupportedVersion(f"room key version {version}")
            if any(
                len(value) != KEY_BYTES
                for value in (room, session_id, sender_user, sender_device, recipient_device)
            ) or {len(sender_curve), len(recipient_curve)} != {CURVE_KEY_BYTES}:
                raise MalformedMessage("room, ids and keys of a room key are 32 bytes")
            if not 0 < len(session_key) <= MAX_SESSION_KEY_BYTES or first_index < 0:
                raise MalformedMessage("room key: bad session key length or first index")
            return RoomKey(
                room=RoomId(room),
                session_id=session_id,
                session_key=session_key,
                first_index=first_index,
                sender_user=UserId(sender_user),
                sender_device=DeviceId(sender_device),
                sender_curve=sender_curve,
                recipient_device=DeviceId(recipient_device),
                recipient_curve=recipient_curve,
            )
    raise MalformedMessage("room key is a 10-item array (SPEC §27.4)")


def check_room_key(
    key: RoomKey,
    *,
    room: RoomId,
    sender_user: UserId,
    sender_device: DeviceId,
    sender_curve: bytes,
    recipient_device: DeviceId,
    recipient_curve: bytes,
) -> None:
    """Check a decrypted room key against the envelope and Olm channel that carried it.

    `sender_*` come from the ROOM_KEY envelope (signed) and the sender's key bundle (signed,
    SPEC §27.1); `recipient_*` are our own device and Curve25519 key (SPEC §27.5).

    Raises:
        KeyMismatch: any name in the payload differs from the channel's.
    """
    expected = (room, sender_user, sender_device, sender_curve, recipient_device, recipient_curve)
    found = (
        key.room,
        key.sender_user,
        key.sender_device,
        key.sender_curve,
        key.recipient_device,
        key.recipient_curve,
    )
    names = ("room", "sender user", "sender device", "sender key", "recipient", "recipient key")
    for name, want, got in zip(names, expected, found, strict=True):
        if want != got:
            raise KeyMismatch(f"room key names another {name} than its channel")


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """One recipient device's Olm message inside a ROOM_KEY body."""

    recipient: DeviceId
    olm_kind: int
    """OlmKind.PRE_KEY (the first message of a session) or OlmKind.NORMAL."""
    ciphertext: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomKeyShares:
    """The body of a ROOM_KEY envelope (SPEC §27.5)."""

    sender_bundle: KeyBundle
    """The sending device's signed key bundle (SPEC §27.1): its Curve25519 identity key opens a
    pre-key message's session, and its fallback key lets the recipient share keys back."""
    shares: tuple[Share, ...]

    @property
    def sender_curve(self) -> bytes:
        """The sending device's Curve25519 identity key."""
        return self.sender_bundle.identity_key

    def for_device(self, device: DeviceId) -> Share | None:
        """The share addressed to `device`, if any."""
        return next((share for share in self.shares if share.recipient == device), None)


def encode_room_key_shares(value: RoomKeyShares) -> bytes:
    """CBOR [version, sender bundle, [[recipient, olm kind, ciphertext], ...]]."""
    return encode_canonical(
        [
            _VERSION,
            encode_key_bundle(value.sender_bundle),
            [[share.recipient, share.olm_kind, share.ciphertext] for share in value.shares],
        ]
    )


def decode_room_key_shares(body: bytes) -> RoomKeyShares:
    """Parse a ROOM_KEY body: each recipient at most once, non-empty, bounded.

    Raises:
        MalformedMessage: not the shape of SPEC §27.5 (TooLarge past MAX_BODY_BYTES).
        UnsupportedVersion: a version other than 0.
    """
    match decode_canonical(body, max_bytes=MAX_BODY_BYTES):
        case [int() as version, bytes() as bundle, list() as items] if items:
            if version != _VERSION:
                raise UnsupportedVersion(f"room key shares version {version}")
            sender_bundle = decode_key_bundle(bundle)
            shares = tuple(_share(item) for item in items)
            if len({share.recipient for share in shares}) != len(shares):
                raise MalformedMessage("a recipient appears twice in one ROOM_KEY body")
            return RoomKeyShares(sender_bundle=sender_bundle, shares=shares)
    raise MalformedMessage("ROOM_KEY body is [version, sender bundle, [share, ...]] (SPEC §27.5)")


def check_sender_bundle(shares: RoomKeyShares, sender_device: DeviceId) -> None:
    """The bundle in a ROOM_KEY body must be its envelope's device's, signed by it (§27.5).

    Raises:
        KeyMismatch: the bundle is another device's.
        BadSignature: the device did not sign it.
    """
    if shares.sender_bundle.device != sender_device:
        raise KeyMismatch("ROOM_KEY carries another device's key bundle")
    verify_key_bundle(shares.sender_bundle)


def _share(item: object) -> Share:
    match item:
        case [bytes() as recipient, int() as kind, bytes() as ciphertext]:
            if len(recipient) != KEY_BYTES or kind not in (OlmKind.PRE_KEY, OlmKind.NORMAL):
                raise MalformedMessage("share: recipient is 32 bytes, kind 0 or 1")
            if not 0 < len(ciphertext) <= _MAX_OLM_BYTES:
                raise MalformedMessage(f"share ciphertext is 1..{_MAX_OLM_BYTES} bytes")
            return Share(recipient=DeviceId(recipient), olm_kind=kind, ciphertext=ciphertext)
    raise MalformedMessage("share is [recipient, olm kind, ciphertext]")


def chunk_shares(
    sender_bundle: KeyBundle, shares: Iterable[Share], *, max_bytes: int = MAX_BODY_BYTES
) -> list[RoomKeyShares]:
    """Split shares into as few ROOM_KEY bodies as fit `max_bytes` each (SPEC §27.5)."""
    bodies: list[RoomKeyShares] = []
    current: list[Share] = []
    size = _BODY_OVERHEAD_BYTES
    for share in shares:
        cost = _SHARE_OVERHEAD_BYTES + len(share.ciphertext)
        if current and size + cost > max_bytes:
            bodies.append(RoomKeyShares(sender_bundle=sender_bundle, shares=tuple(current)))
            current, size = [], _BODY_OVERHEAD_BYTES
        current.append(share)
        size += cost
    if current:
        bodies.append(RoomKeyShares(sender_bundle=sender_bundle, shares=tuple(current)))
    return bodies
