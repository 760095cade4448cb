"""Device key bundles and claimed one-time keys (SPEC §27.1, §27.2), sans-I/O.

A device's Olm identity (Curve25519) key and its fallback key travel in a `KeyBundle` that the
device's Ed25519 key of SPEC §3 signs, so a home record carries keys no relay can swap. A
one-time key handed out by the device's home is signed the same way (`OneTimeKey`). Owns no
state: the Account itself is node state (node/e2ee).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..canonical import decode_canonical, encode_canonical
from ..errors import MalformedMessage, UnsupportedVersion
from ..identity import KEY_BYTES, SIGNATURE_BYTES, DeviceId, KeyPair, verify_signature

__all__ = [
    "CURVE_KEY_BYTES",
    "KEY_BUNDLE_DOMAIN",
    "ONE_TIME_KEY_DOMAIN",
    "KeyBundle",
    "OneTimeKey",
    "decode_key_bundle",
    "decode_one_time_key",
    "encode_key_bundle",
    "encode_one_time_key",
    "issue_key_bundle",
    "issue_one_time_key",
    "verify_key_bundle",
    "verify_one_time_key",
]

CURVE_KEY_BYTES: Final = 32
KEY_BUNDLE_DOMAIN: Final = b"hearthmesh/key-bundle/v0\x00"
ONE_TIME_KEY_DOMAIN: Final = b"hearthmesh/one-time-key/v0\x00"
_VERSION: Final = 0
_MAX_BUNDLE_BYTES: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyBundle:
    """A device's published Olm keys (SPEC §27.1). Field order is wire order."""

    device: DeviceId
    """The Ed25519 device key (SPEC §3.1) that signs this bundle."""
    identity_key: bytes
    """The device's Curve25519 identity key: the Olm channel's sender or recipient key."""
    fallback_key: bytes
    """A Curve25519 key for an Olm session when no one-time key can be claimed (home away)."""
    issued_ms: int
    """A newer bundle of the same device replaces an older one."""
    signature: bytes

    def signing_bytes(self) -> bytes:
        """What the device key signs: the domain, then CBOR of the first five fields."""
        return KEY_BUNDLE_DOMAIN + encode_canonical(
            [_VERSION, self.device, self.identity_key, self.fallback_key, self.issued_ms]
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OneTimeKey:
    """A Curve25519 one-time key, claimed from the device's home (SPEC §27.2)."""

    device: DeviceId
    key: bytes
    signature: bytes

    def signing_bytes(self) -> bytes:
        """What the device key signs: the domain, then CBOR [version, device, key]."""
        return ONE_TIME_KEY_DOMAIN + encode_canonical([_VERSION, self.device, self.key])


def issue_key_bundle(
    device_key: KeyPair, *, identity_key: bytes, fallback_key: bytes, issued_ms: int
) -> KeyBundle:
    """Sign a bundle with the device key. Raises MalformedMessage on a wrong key length."""
    _check_curve(identity_key, "identity key")
    _check_curve(fallback_key, "fallback key")
    unsigned = KeyBundle(
        device=DeviceId(device_key.public),
        identity_key=identity_key,
        fallback_key=fallback_key,
        issued_ms=issued_ms,
        signature=b"",
    )
    return KeyBundle(
        device=unsigned.device,
        identity_key=identity_key,
        fallback_key=fallback_key,
        issued_ms=issued_ms,
        signature=device_key.sign(unsigned.signing_bytes()),
    )


def issue_one_time_key(device_key: KeyPair, key: bytes) -> OneTimeKey:
    """Sign a one-time key with the device key."""
    _check_curve(key, "one-time key")
    unsigned = OneTimeKey(device=DeviceId(device_key.public), key=key, signature=b"")
    return OneTimeKey(
        device=unsigned.device, key=key, signature=device_key.sign(unsigned.signing_bytes())
    )


def encode_key_bundle(bundle: KeyBundle) -> bytes:
    """CBOR [version, device, identity key, fallback key, issued_ms, signature]."""
    return encode_canonical(
        [
            _VERSION,
            bundle.device,
            bundle.identity_key,
            bundle.fallback_key,
            bundle.issued_ms,
            bundle.signature,
        ]
    )


def decode_key_bundle(data: bytes) -> KeyBundle:
    """Parse a bundle (its signature is checked by `verify_key_bundle`).

    Raises:
        MalformedMessage: not the shape of SPEC §27.1 (TooLarge past its bound).
        UnsupportedVersion: a version other than 0.
    """
    match decode_canonical(data, max_bytes=_MAX_BUNDLE_BYTES):
        case [
            int() as version,
            bytes() as device,
            bytes() as ik,
            bytes() as fk,
            int() as ms,
            bytes() as sig,
        ]:
            _check_version(version)
            _check_ids(device, sig)
            _check_curve(ik, "identity key")
            _check_curve(fk, "fallback key")
            if ms < 0:
                raise MalformedMessage("issued_ms is a non-negative integer")
            return KeyBundle(
                device=DeviceId(device),
                identity_key=ik,
                fallback_key=fk,
                issued_ms=ms,
                signature=sig,
            )
    raise MalformedMessage("key bundle is [version, device, identity, fallback, issued, sig]")


def verify_key_bundle(bundle: KeyBundle) -> None:
    """Raises BadSignature unless the bundle's device key signed it (SPEC §27.1)."""
    verify_signature(bundle.device, bundle.signing_bytes(), bundle.signature)


def encode_one_time_key(key: OneTimeKey) -> bytes:
    """CBOR [version, device, key, signature]."""
    return encode_canonical([_VERSION, key.device, key.key, key.signature])


def decode_one_time_key(data: bytes) -> OneTimeKey:
    """Parse a claimed one-time key. Raises MalformedMessage or UnsupportedVersion."""
    match decode_canonical(data, max_bytes=_MAX_BUNDLE_BYTES):
        case [int() as version, bytes() as device, bytes() as key, bytes() as sig]:
            _check_version(version)
            _check_ids(device, sig)
            _check_curve(key, "one-time key")
            return OneTimeKey(device=DeviceId(device), key=key, signature=sig)
    raise MalformedMessage("one-time key is [version, device, key, signature]")


def verify_one_time_key(key: OneTimeKey) -> None:
    """Raises BadSignature unless the key's device signed it (SPEC §27.2)."""
    verify_signature(key.device, key.signing_bytes(), key.signature)


def _check_version(version: int) -> None:
    if version != _VERSION:
        raise UnsupportedVersion(f"e2ee key version {version}")


def _check_ids(device: bytes, signature: bytes) -> None:
    if len(device) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise MalformedMessage("device is 32 bytes and signature 64")


def _check_curve(key: bytes, what: str) -> None:
    if len(key) != CURVE_KEY_BYTES:
        raise MalformedMessage(f"{what} is {CURVE_KEY_BYTES} bytes, got {len(key)}")
