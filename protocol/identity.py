"""User and device identities, their text forms and device certificates (SPEC §3).

A user id and a device id are Ed25519 public keys (32 bytes). A device certificate is the
user key's signature over the device key with a creation time and an optional expiry.
Ed25519 is PyNaCl (libsodium): it verifies twice as fast as `cryptography` here
(perf-notes.md) and rejects non-canonical and small-order encodings (SPEC §3.1).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NewType

import nacl.exceptions
import nacl.signing

from .canonical import decode_canonical, encode_canonical
from .errors import BadCertificate, BadSignature, ClockSkew, InvalidIdentifier, MalformedMessage
from .hlc import MAX_DRIFT_MS

__all__ = [
    "CERTIFICATE_DOMAIN",
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "DeviceCertificate",
    "DeviceId",
    "KeyPair",
    "Rng",
    "UserId",
    "check_certificate_window",
    "decode_certificate",
    "decode_device_id",
    "decode_user_id",
    "device_id_text",
    "encode_certificate",
    "generate_keypair",
    "issue_certificate",
    "keypair_from_seed",
    "user_id_text",
    "verify_certificate",
    "verify_signature",
]

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
CERTIFICATE_DOMAIN: Final = b"hearthmesh/device-certificate/v0\x00"
_CERTIFICATE_VERSION: Final = 0
_MAX_CERTIFICATE_BYTES: Final = 256

UserId = NewType("UserId", bytes)
"""A user's Ed25519 identity public key, 32 bytes."""
DeviceId = NewType("DeviceId", bytes)
"""A device's Ed25519 signing public key, 32 bytes."""

Rng = Callable[[int], bytes]
"""Randomness is passed in: rng(n) returns n random bytes."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair; `seed` is the 32-byte private key as stored (SPEC §3.1)."""

    seed: bytes
    public: bytes
    _signer: nacl.signing.SigningKey = field(repr=False, compare=False)
    """Expanded once: re-deriving it from the seed costs as much as a signature."""

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self._signer.sign(message).signature

    def __repr__(self) -> str:  # never print a private key into a log
        return f"KeyPair(public={self.public.hex()})"


def keypair_from_seed(seed: bytes) -> KeyPair:
    """The key pair of a stored 32-byte seed. Raises MalformedMessage on a wrong length."""
    if len(seed) != KEY_BYTES:
        raise MalformedMessage(f"an Ed25519 seed is {KEY_BYTES} bytes, got {len(seed)}")
    signer = nacl.signing.SigningKey(bytes(seed))
    return KeyPair(seed=bytes(seed), public=bytes(signer.verify_key), _signer=signer)


def generate_keypair(rng: Rng) -> KeyPair:
    """A fresh key pair from 32 bytes of the caller's randomness."""
    return keypair_from_seed(rng(KEY_BYTES))


def verify_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature (RFC 8032, libsodium's strict rules).

    Raises:
        BadSignature: wrong key length, wrong signature length, or it does not verify.
    """
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise BadSignature("wrong key or signature length")
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise BadSignature("signature does not verify") from None


# --- text forms (SPEC §3.2) --------------------------------------------------------------------

_TEXT_CHARS: Final = 52  # base32 of 32 bytes without padding


def _id_text(prefix: str, raw: bytes) -> str:
    return _encoded_id(prefix, bytes(raw))  # bytes() of bytes is the object itself


@functools.lru_cache(maxsize=4096)
def _encoded_id(prefix: str, raw: bytes) -> str:
    # Memoised: a pure function, and base32 in Python costs ~10 µs, paid for every user id in
    # every client frame (a node names few users often).
    return prefix + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _id_from_text(prefix: str, text: str, what: str) -> bytes:
    if len(text) != len(prefix) + _TEXT_CHARS or not text.startswith(prefix):
        raise InvalidIdentifier(f"{what} id must be {prefix!r} + {_TEXT_CHARS} base32 chars")
    body = text[len(prefix) :]
    if body != body.lower():
        raise InvalidIdentifier(f"{what} id must be lowercase")
    try:
        raw = base64.b32decode(body.upper() + "====")
    except (binascii.Error, ValueError):
        raise InvalidIdentifier(f"{what} id is not base32") from None
    if _id_text(prefix, raw) != text:  # the 4 spare bits must be zero: one text per id
        raise InvalidIdentifier(f"{what} id is not canonical")
    return raw


def user_id_text(user: UserId) -> str:
    """`u` + 52 lowercase base32 characters of the key (RFC 4648 §6, no padding)."""
    return _id_text("u", user)


def device_id_text(device: DeviceId) -> str:
    """`d` + 52 lowercase base32 characters of the key."""
    return _id_text("d", device)


def decode_user_id(text: str) -> UserId:
    """Parse a user id's text form. Raises InvalidIdentifier."""
    return UserId(_id_from_text("u", text, "user"))


def decode_device_id(text: str) -> DeviceId:
    """Parse a device id's text form. Raises InvalidIdentifier."""
    return DeviceId(_id_from_text("d", text, "device"))


# --- device certificates (SPEC §3.3) -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCertificate:
    """The user key's statement that `device` belongs to `user`."""

    version: int
    user: UserId
    device: DeviceId
    created_ms: int
    expires_ms: int | None
    """None: valid until revoked."""
    signature: bytes

    def signing_bytes(self) -> bytes:
        """What the user key signs: the domain string then the CBOR of the unsigned fields."""
        return CERTIFICATE_DOMAIN + encode_canonical(
            [self.version, self.user, self.device, self.created_ms, self.expires_ms]
        )


def issue_certificate(
    user_key: KeyPair, device: DeviceId, *, created_ms: int, expires_ms: int | None = None
) -> DeviceCertificate:
    """Certify `device` with the user's key."""
    unsigned = DeviceCertificate(
        version=_CERTIFICATE_VERSION,
        user=UserId(user_key.public),
        device=device,
        created_ms=created_ms,
        expires_ms=expires_ms,
        signature=b"",
    )
    signature = user_key.sign(unsigned.signing_bytes())
    return DeviceCertificate(
        version=unsigned.version,
        user=unsigned.user,
        device=device,
        created_ms=created_ms,
        expires_ms=expires_ms,
        signature=signature,
    )


def encode_certificate(cert: DeviceCertificate) -> bytes:
    """CBOR array [version, user, device, created_ms, expires_ms|null, signature]."""
    return encode_canonical(
        [cert.version, cert.user, cert.device, cert.created_ms, cert.expires_ms, cert.signature]
    )


def decode_certificate(data: bytes) -> DeviceCertificate:
    """Parse a certificate's structure; the signature is checked by `verify_certificate`.

    Raises:
        TooLarge, MalformedMessage: the bytes are not a well-formed certificate.
    """
    value = decode_canonical(data, max_bytes=_MAX_CERTIFICATE_BYTES)
    match value:
        case [
            int() as version,
            bytes() as user,
            bytes() as device,
            int() as created_ms,
            (int() | None) as expires_ms,
            bytes() as signature,
        ] if (
            len(user) == KEY_BYTES
            and len(device) == KEY_BYTES
            and len(signature) == SIGNATURE_BYTES
            and created_ms >= 0
            and (expires_ms is None or expires_ms > created_ms)
        ):
            return DeviceCertificate(
                version=version,
                user=UserId(user),
                device=DeviceId(device),
                created_ms=created_ms,
                expires_ms=expires_ms,
                signature=signature,
            )
    raise MalformedMessage("not a device certificate")


def verify_certificate(cert: DeviceCertificate, *, now_ms: int) -> None:
    """Check the user's signature and the validity window at `now_ms`.

    Raises:
        BadCertificate: unknown version, forged, or expired.
        ClockSkew: created more than MAX_DRIFT_MS after `now_ms` (one of the clocks is wrong).
    """
    if cert.version != _CERTIFICATE_VERSION:
        raise BadCertificate(f"unknown certificate version {cert.version}")
    try:
        verify_signature(cert.user, cert.signing_bytes(), cert.signature)
    except BadSignature:
        raise BadCertificate("certificate signature does not verify") from None
    check_certificate_window(cert, now_ms=now_ms)


def check_certificate_window(cert: DeviceCertificate, *, now_ms: int) -> None:
    """The time checks of `verify_certificate` alone (for a certificate verified before).

    Raises:
        BadCertificate: expired (`expired` set).
        ClockSkew: created more than MAX_DRIFT_MS after `now_ms`.
    """
    if cert.created_ms - now_ms > MAX_DRIFT_MS:  # a clock problem, not a forgery: retry later
        raise ClockSkew(f"certificate created {cert.created_ms - now_ms} ms in the future")
    if cert.expires_ms is not None and now_ms >= cert.expires_ms:
        raise BadCertificate("certificate expired", expired=True)
