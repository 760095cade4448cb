"""Home records of SPEC §13: signed by the user, carrying certified devices."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import (
    BadCertificate,
    BadSignature,
    ClockSkew,
    RemoteProtocolError,
)
from hearthmesh.protocol.home_record import (
    HomeRecord,
    decode_home_record,
    encode_home_record,
    issue_home_record,
    verify_home_record,
)
from hearthmesh.protocol.identity import DeviceId, KeyPair, issue_certificate, keypair_from_seed

NOW_MS = 1_700_000_000_000
USER, DEVICE, OTHER = (keypair_from_seed(bytes([i]) * 32) for i in (1, 2, 3))


def record(user: KeyPair = USER, cert_user: KeyPair = USER, issued_ms: int = NOW_MS) -> HomeRecord:
    cert = issue_certificate(cert_user, DeviceId(DEVICE.public), created_ms=NOW_MS)
    return issue_home_record(
        user,
        issued_ms=issued_ms,
        homes=("12D3KooWExample",),
        addrs=("/ip4/127.0.0.1/tcp/4470/p2p/12D3KooWExample",),
        devices=(cert,),
    )


def test_round_trip_and_verify() -> None:
    decoded = decode_home_record(encode_home_record(record()))
    assert decoded == record()
    verify_home_record(decoded, now_ms=NOW_MS)


def test_forged_record_fails() -> None:
    forged = record()
    tampered = dataclasses.replace(forged, homes=("12D3KooWMallory",))
    with pytest.raises(BadSignature):
        verify_home_record(tampered, now_ms=NOW_MS)


def test_foreign_device_certificate_fails() -> None:
    with pytest.raises(BadCertificate):
        verify_home_record(record(cert_user=OTHER), now_ms=NOW_MS)


def test_future_record_fails() -> None:
    with pytest.raises(ClockSkew):  # may be good later: not a forgery (SPEC §11.6)
        verify_home_record(record(issued_ms=NOW_MS + 120_000), now_ms=NOW_MS)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_home_record(data)
