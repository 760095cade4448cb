"""Sealed media (SPEC §28): AES-256-GCM with a fresh key, checked twice on opening."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.content import MediaRef, decode_media, encode_media
from hearthmesh.protocol.errors import ErrorCode, MalformedMessage, MediaTampered
from hearthmesh.protocol.media_seal import (
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    MediaSeal,
    open_media,
    seal_media,
    sealed_size,
)


def test_a_blob_seals_under_the_rngs_key_and_opens_to_the_plaintext() -> None:
    counter = itertools.count(1)
    ciphertext, seal = seal_media(b"picture", lambda n: bytes([next(counter)]) * n)
    assert seal.key == b"\x01" * KEY_BYTES and seal.nonce == b"\x02" * NONCE_BYTES
    assert seal.plain_digest == hashlib.sha256(b"picture").digest()
    assert len(ciphertext) == sealed_size(len(b"picture")) == len(b"picture") + TAG_BYTES
    assert b"picture" not in ciphertext
    assert open_media(ciphertext, seal) == b"picture"


@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=2047 + TAG_BYTES))
def test_any_flipped_bit_is_media_tampered(plaintext: bytes, position: int) -> None:
    ciphertext, seal = seal_media(plaintext, lambda n: b"\x07" * n)
    flipped = bytearray(ciphertext)
    flipped[position % len(flipped)] ^= 0x80
    with pytest.raises(MediaTampered) as refused:
        open_media(bytes(flipped), seal)
    assert refused.value.code == ErrorCode.MEDIA_TAMPERED


def test_another_key_or_a_wrong_plaintext_digest_is_media_tampered() -> None:
    ciphertext, seal = seal_media(b"picture", lambda n: b"\x07" * n)
    other_key = MediaSeal(key=b"\x08" * 32, nonce=seal.nonce, plain_digest=seal.plain_digest)
    with pytest.raises(MediaTampered):
        open_media(ciphertext, other_key)
    lying = MediaSeal(key=seal.key, nonce=seal.nonce, plain_digest=bytes(32))
    with pytest.raises(MediaTampered):
        open_media(ciphertext, lying)


def test_a_media_body_carries_its_seal_and_older_bodies_have_none() -> None:
    seal = MediaSeal(key=b"k" * 32, nonce=b"n" * 12, plain_digest=b"p" * 32)
    sealed = MediaRef(type="image", digest=b"d" * 32, content_type="image/png", size=5, seal=seal)
    assert decode_media(encode_media(sealed)) == sealed
    assert sealed.blob_size == 5 + TAG_BYTES
    plain = MediaRef(type="image", digest=b"d" * 32, content_type="image/png", size=5)
    assert decode_media(encode_media(plain)).seal is None and plain.blob_size == 5
    short_key = encode_media(sealed).replace(b"k" * 32, b"k" * 31 + b"")
    with pytest.raises(MalformedMessage):
        decode_media(short_key)
