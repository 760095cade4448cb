"""Device certificates whose signature was verified, remembered (bounded, oldest first out).

A sender's certificate rides on every delivery batch and every gossip message. Checking the
user's signature on each sight would be the largest cost of a small batch after the envelope's
own signature, so a certificate seen verified before gets only the time checks, which can turn
with the clock (SPEC §3.3).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from .identity import DeviceCertificate, check_certificate_window, verify_certificate

__all__ = ["VERIFIED_CERTIFICATES", "VerifiedCertificates"]

VERIFIED_CERTIFICATES: Final = 4096


class VerifiedCertificates:
    """`verify(cert)`: `verify_certificate`, with the signature checked once per certificate."""

    def __init__(self, capacity: int = VERIFIED_CERTIFICATES) -> None:
        self._known: OrderedDict[DeviceCertificate, None] = OrderedDict()
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
