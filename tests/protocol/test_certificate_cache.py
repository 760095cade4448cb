"""Certificates verified once (protocol/certificate_cache.py): the signature is checked on the
first sight only; the time window on every sight; a forgery is never taken for the real one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hearthmesh.protocol import certificate_cache
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.errors import BadCertificate, ClockSkew
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
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


def test_the_signature_is_checked_once_and_the_window_every_time(
    rng: Callable[[int], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[DeviceCertificate] = []
    real = verify_certificate

    def counting(cert: DeviceCertificate, *, now_ms: int) -> None:
        checked.append(cert)
        real(cert, now_ms=now_ms)

    monkeypatch.setattr(certificate_cache, "verify_certificate", counting)
    cert = _certificate(rng)
    seen = VerifiedCertificates()
    for _ in range(3):
        seen.verify(cert, now_ms=NOW_MS + 10)
    assert checked == [cert]
    with pytest.raises(BadCertificate, match="expired"):
        seen.verify(cert, now_ms=NOW_MS + 1000)
    with pytest.raises(ClockSkew):
        seen.verify(cert, now_ms=NOW_MS - 3_600_000)


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
