"""Encrypted media (SPEC §28): a blob is sealed with a fresh AES-256-GCM key on its uploader's
home, so every peer that holds or relays it holds ciphertext only.

The blob's address (`MediaRef.digest`, SPEC §25) is the SHA-256 of the ciphertext, so any holder
can check what it serves; the `MediaSeal` (key, nonce, SHA-256 of the plaintext) travels inside
the message that references the blob, and only a reader of that message can open it. Sans-I/O:
randomness comes in as `rng`. Owns no state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .canonical import CborValue
from .errors import MalformedMessage, MediaTampered
from .identity import Rng

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "MediaSeal",
    "open_media",
    "seal_from_cbor",
    "seal_media",
    "seal_to_cbor",
    "sealed_size",
]

KEY_BYTES: Final = 32
"""AES-256."""
NONCE_BYTES: Final = 12
"""The 96-bit GCM nonce: random, used with one key only (each blob has its own key)."""
TAG_BYTES: Final = 16
"""The GCM tag appended to the ciphertext: a sealed blob is `TAG_BYTES` longer."""
_DIGEST_BYTES: Final = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSeal:
    """What opens one blob; carried only inside the referencing message (SPEC §28.2)."""

    key: bytes
    """The AES-256-GCM key, fresh for this blob."""
    nonce: bytes
    plain_digest: bytes
    """SHA-256 of the plaintext, checked after decryption."""


def sealed_size(plain_size: int) -> int:
    """Bytes of the blob that holds `plain_size` bytes of plaintext."""
    return plain_size + TAG_BYTES


def seal_media(plaintext: bytes, rng: Rng) -> tuple[bytes, MediaSeal]:
    """Encrypt `plaintext` under a fresh key and nonce: (ciphertext with tag, seal)."""
    seal = MediaSeal(
        key=rng(KEY_BYTES),
        nonce=rng(NONCE_BYTES),
        plain_digest=hashlib.sha256(plaintext).digest(),
    )
    return AESGCM(seal.key).encrypt(seal.nonce, plaintext, None), seal


def open_media(ciphertext: bytes, seal: MediaSeal) -> bytes:
    """The plaintext of a sealed blob (SPEC §28.3).

    Raises:
        MediaTampered: the GCM tag does not verify (a flipped bit, another key) or the
            plaintext does not hash to `seal.plain_digest`. Nothing of it is returned.
    """
    try:
        plaintext = AESGCM(seal.key).decrypt(seal.nonce, ciphertext, None)
    except InvalidTag:
        raise MediaTampered("the media blob does not decrypt under its key") from None
    if hashlib.sha256(plaintext).digest() != seal.plain_digest:
        raise MediaTampered("the decrypted media does not hash to its plaintext digest")
    return plaintext


def seal_to_cbor(seal: MediaSeal) -> list[CborValue]:
    """[key, nonce, plaintext sha-256]: the CBOR value inside a media body."""
    return [seal.key, seal.nonce, seal.plain_digest]


def seal_from_cbor(value: CborValue) -> MediaSeal:
    """Parse the seal of a media body.

    Raises:
        MalformedMessage: not [32-byte key, 12-byte nonce, 32-byte digest].
    """
    match value:
        case [bytes() as key, bytes() as nonce, bytes() as digest] if (
            len(key) == KEY_BYTES and len(nonce) == NONCE_BYTES and len(digest) == _DIGEST_BYTES
        ):
            return MediaSeal(key=key, nonce=nonce, plain_digest=digest)
    raise MalformedMessage("a media seal is [32-byte key, 12-byte nonce, 32-byte sha-256]")
