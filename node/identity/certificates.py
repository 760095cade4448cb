"""Device certificates as this node holds them, and which thread owns which cache (SPEC §3.3).

Certificates by device live in one place each: ours in the keyring, everyone else's in
`HomeDirectory` (from home records and delivery batches); `CertificateLookup` answers from both.
The caches of certificates whose signature was already verified
(`protocol.certificate_cache.VerifiedCertificates`) are not thread-safe, so each thread owns
its own: the event loop's (the receiver: deliveries, gossip listeners, presence) and the trio
thread's (the gossip validators). `ThreadCertificates` is such a cache that refuses a second
thread, so sharing one is caught by the first test that crosses the bridge, not by a corrupted
cache under load.
"""

from __future__ import annotations

import threading

from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.protocol.certificate_cache import VERIFIED_CERTIFICATES, VerifiedCertificates
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.identity import DeviceCertificate, DeviceId

__all__ = ["CertificateLookup", "ThreadCertificates"]


class ThreadCertificates(VerifiedCertificates):
    """A `VerifiedCertificates` used by one thread only: the first to verify owns it."""

    def __init__(self, capacity: int = VERIFIED_CERTIFICATES) -> None:
        super().__init__(capacity)
        self._owner: int | None = None

    def verify(self, cert: DeviceCertificate, *, now_ms: int) -> None:
        """`VerifiedCertificates.verify` on the owning thread.

        Raises:
            LocalProtocolError: called from another thread than the first caller's.
        """
        thread = threading.get_ident()
        if self._owner is None:
            self._owner = thread
        elif thread != self._owner:
            raise LocalProtocolError("a certificate cache used from a second thread")
        super().verify(cert, now_ms=now_ms)


class CertificateLookup:
    """The certificate proving whose a device is: ours, or one a record or batch gave."""

    def __init__(self, *, keyring: Keyring, directory: HomeDirectory) -> None:
        self._keyring = keyring
        self._directory = directory

    def of(self, device: DeviceId) -> bytes | None:
        if device == self._keyring.device_id:
            return self._keyring.certificate_bytes
        return self._directory.certificate(device)
