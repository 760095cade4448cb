"""Device certificates whose signature was verified, remembered (bounded, oldest first out).

A sender's certificate rides on every delivery batch and every gossip message. Checking the
user's signature on each sight would be the largest cost of a small batch after the envelope's
own signature, so a certificate seen verified before gets only the time checks, which can turn
with the clock (SPEC §3.3).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from .identity import (
    DeviceCertificate,
    check_certificate_window,
    decode_certificate,
    verify_certificate,
)

__all__ = ["VERIFIED_CERTIFICATES", "VerifiedCertificates"]

VERIFIED_CERTIFICATES: Final = 4096


class VerifiedCertificates:
    """`verify(cert)`: `verify_certificate`, with the signature checked once per certificate."""

    def __init__(self, capacity: int = VERIFIED_CERTIFICATES) -> None:
        self._known: OrderedDict[DeviceCertificate, None] = OrderedDict()
        self._decoded: OrderedDict[bytes, DeviceCertificate] = OrderedDict()
        """Encodings verified before, decoded: a batch's certificate is usually one of these
        bytes, and its strict decode (parse, re-encode to compare) the rest of its cost."""
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, cert: object) -> bool:
        return cert in self._known

    def verify(self, cert: DeviceCertificate, *, now_ms: int) -> None:
        """Raises what `verify_certificate` raises (BadCertificate, ClockSkew)."""
        if cert in self._known:
            self._known.move_to_end(cert)
            check_certificate_window(cert, now_ms=now_ms)
            return
        verify_certificate(cert, now_ms=now_ms)
        self._known[cert] = None
        if len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def verify_encoded(self, data: bytes, *, now_ms: int) -> DeviceCertificate:
        """`decode_certificate` then `verify`, decoding once per encoding while it stays
        recent (the same bytes decode to the same certificate; `verify` still runs).

        Raises:
            TooLarge, MalformedMessage: not a certificate. BadCertificate, ClockSkew: as `verify`.
        """
        cert = self._decoded.get(data)
        if cert is None:
            cert = decode_certificate(data)
        self.verify(cert, now_ms=now_ms)
        self._decoded[data] = cert  # (only once it verified: refused bytes take no place)
        self._decoded.move_to_end(data)
        if len(self._decoded) > self._capacity:
            self._decoded.popitem(last=False)
        return cert
