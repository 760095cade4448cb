"""Certificates verified once (protocol/certificate_cache.py): the signature is checked on the
first sight only; the time window on every sight; a forgery is never taken for the real one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hearthmesh.protocol import certificate_cache
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.errors import BadCertificate, ClockSkew, MalformedMessage
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    decode_certificate,
    encode_certificate,
    generate_keypair,
    issue_certificate,
    verify_certificate,
)

NOW_MS = 1_700_000_000_000


def _certificate(rng: Callable[[int], bytes]) -> DeviceCertificate:
    user, device = generate_keypair(rng), generate_keypair(rng)
    return issue_certificate(
        user, DeviceId(device.public), created_ms=NOW_MS, expires_ms=NOW_MS + 1000
    )


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Each encoding the cache decodes, in order (the real decode runs)."""
    seen: list[bytes] = []
    real = decode_certificate

    def counting(data: bytes) -> DeviceCertificate:
        seen.append(data)
        return real(data)

    monkeypatch.setattr(certificate_cache, "decode_certificate", counting)
    return seen


@pytest.mark.parametrize("encoded", [False, True], ids=["certificate", "its encoding"])
def test_the_signature_is_checked_once_and_the_window_every_time(
    rng: Callable[[int], bytes],
    monkeypatch: pytest.MonkeyPatch,
    decoded: list[bytes],
    encoded: bool,
) -> None:
    checked: list[DeviceCertificate] = []
    real = verify_certificate

    def counting(cert: DeviceCertificate, *, now_ms: int) -> None:
        checked.append(cert)
        real(cert, now_ms=now_ms)

    monkeypatch.setattr(certificate_cache, "verify_certificate", counting)
    cert = _certificate(rng)
    wire = encode_certificate(cert)
    seen = VerifiedCertificates()

    def sight(now_ms: int) -> None:
        if encoded:  # decoded once while it stays recent (`verify_encoded`)
            assert seen.verify_encoded(wire, now_ms=now_ms) == cert
        else:
            seen.verify(cert, now_ms=now_ms)

    for _ in range(3):
        sight(NOW_MS + 10)
    assert checked == [cert]
    assert decoded == ([wire] if encoded else [])
    with pytest.raises(BadCertificate, match="expired"):
        sight(NOW_MS + 1000)
    with pytest.raises(ClockSkew):
        sight(NOW_MS - 3_600_000)


def test_a_forgery_of_a_remembered_certificate_is_still_refused(
    rng: Callable[[int], bytes],
) -> None:
    cert = _certificate(rng)
    seen = VerifiedCertificates()
    seen.verify(cert, now_ms=NOW_MS)
    longer = dataclasses.replace(cert, expires_ms=NOW_MS + 10**9)  # same signature, new field
    other_signature = dataclasses.replace(cert, signature=bytes(64))
    for forged in (longer, other_signature):
        with pytest.raises(BadCertificate):
            seen.verify(forged, now_ms=NOW_MS)


def test_the_oldest_are_forgotten_past_the_capacity(rng: Callable[[int], bytes]) -> None:
    certs = [_certificate(rng) for _ in range(3)]
    seen = VerifiedCertificates(capacity=2)
    for cert in certs:
        seen.verify(cert, now_ms=NOW_MS)
    assert len(seen) == 2
    assert certs[0] not in seen and certs[2] in seen


def test_an_encoding_that_failed_is_decoded_and_refused_again(
    rng: Callable[[int], bytes], decoded: list[bytes]
) -> None:
    forged = encode_certificate(dataclasses.replace(_certificate(rng), signature=bytes(64)))
    seen = VerifiedCertificates()
    for _ in range(2):
        with pytest.raises(BadCertificate):
            seen.verify_encoded(forged, now_ms=NOW_MS)
    assert decoded == [forged, forged]  # nothing refused is remembered
    with pytest.raises(MalformedMessage):
        seen.verify_encoded(b"\x80", now_ms=NOW_MS)


def test_the_oldest_encodings_are_forgotten_past_the_capacity(
    rng: Callable[[int], bytes], decoded: list[bytes]
) -> None:
    wires = [encode_certificate(_certificate(rng)) for _ in range(3)]
    seen = VerifiedCertificates(capacity=2)
    for wire in [*wires, wires[2], wires[0]]:
        seen.verify_encoded(wire, now_ms=NOW_MS)
    assert decoded == [*wires, wires[0]]
