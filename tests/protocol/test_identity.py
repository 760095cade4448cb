"""Identities of SPEC §3: keys, text forms, certificates."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import BadCertificate, BadSignature, InvalidIdentifier
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    decode_certificate,
    decode_device_id,
    decode_user_id,
    device_id_text,
    encode_certificate,
    generate_keypair,
    issue_certificate,
    keypair_from_seed,
    user_id_text,
    verify_certificate,
    verify_signature,
)
from hearthmesh.protocol.rooms import direct_room_id

NOW_MS = 1_700_000_000_000


@given(st.binary(min_size=32, max_size=32))
def test_id_text_round_trips(raw: bytes) -> None:
    assert decode_user_id(user_id_text(UserId(raw))) == raw
    assert decode_device_id(device_id_text(DeviceId(raw))) == raw


def test_user_and_device_ids_do_not_mix() -> None:
    text = user_id_text(UserId(bytes(32)))
    with pytest.raises(InvalidIdentifier):
        decode_device_id(text)


@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_invalid_identifier(text: str) -> None:
    with contextlib.suppress(InvalidIdentifier):
        decode_user_id(text)


def test_same_seed_same_key_and_repr_hides_the_seed(rng: Callable[[int], bytes]) -> None:
    key = generate_keypair(rng)
    assert keypair_from_seed(key.seed).public == key.public
    assert key.seed.hex() not in repr(key)


def test_signature_verifies_and_forgery_fails(rng: Callable[[int], bytes]) -> None:
    key = generate_keypair(rng)
    signature = key.sign(b"message")
    verify_signature(key.public, b"message", signature)
    with pytest.raises(BadSignature):
        verify_signature(key.public, b"messagf", signature)
    with pytest.raises(BadSignature):
        verify_signature(key.public[:31], b"message", signature)


def test_certificate_lifecycle(rng: Callable[[int], bytes]) -> None:
    user, device = generate_keypair(rng), generate_keypair(rng)
    cert = issue_certificate(
        user, DeviceId(device.public), created_ms=NOW_MS, expires_ms=NOW_MS + 1000
    )
    decoded = decode_certificate(encode_certificate(cert))
    assert decoded == cert
    verify_certificate(decoded, now_ms=NOW_MS + 999)
    with pytest.raises(BadCertificate):
        verify_certificate(decoded, now_ms=NOW_MS + 1000)


def test_certificate_from_another_user_is_refused(rng: Callable[[int], bytes]) -> None:
    user, mallory, device = generate_keypair(rng), generate_keypair(rng), generate_keypair(rng)
    cert = issue_certificate(mallory, DeviceId(device.public), created_ms=NOW_MS)
    claimed = type(cert)(
        version=cert.version,
        user=UserId(user.public),
        device=cert.device,
        created_ms=cert.created_ms,
        expires_ms=cert.expires_ms,
        signature=cert.signature,
    )
    with pytest.raises(BadCertificate):
        verify_certificate(claimed, now_ms=NOW_MS)


def test_direct_room_id_is_symmetric(rng: Callable[[int], bytes]) -> None:
    a, b = UserId(rng(32)), UserId(rng(32))
    assert direct_room_id(a, b) == direct_room_id(b, a)
    assert direct_room_id(a, b) != direct_room_id(a, UserId(rng(32)))
