"""Where users live and which devices are theirs: verified home records, newest wins.

Fed by presence gossip and the hello exchange between connected peers; read by the delivery
worker to find a recipient's home node. Records are kept in the store's settings, so the outbox
can still be served after a restart before anyone has announced themselves again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.home_record import (
    HomeRecord,
    decode_home_record,
    encode_home_record,
    verify_home_record,
)
from hearthmesh.protocol.identity import DeviceId, UserId, encode_certificate
from hearthmesh.storage.api import Store

__all__ = ["HomeDirectory", "Presence"]

log = logging.getLogger(__name__)

_RECORD_SETTING = "home-record."


@dataclass(slots=True)
class Presence:
    """What this node knows of one user's presence."""

    online: bool
    last_seen_ms: int
    expires_ms: int


class HomeDirectory:
    """Home records by user, device certificates by device, presence by user.

    All methods that take a `store` run on the store's thread (through `AsyncStore.run`).
    """

    def __init__(self) -> None:
        self._records: dict[UserId, HomeRecord] = {}
        self._certificates: dict[DeviceId, bytes] = {}
        self._devices: dict[UserId, frozenset[DeviceId]] = {}
        self.presence: dict[UserId, Presence] = {}

    def load(self, store: Store, users: list[UserId]) -> None:
        """Read the stored records of `users` (the outbox's destinations, say)."""
        for user in users:
            data = store.get_setting(_RECORD_SETTING + user.hex())
            if data is None:
                continue
            try:
                self._adopt(decode_home_record(data))
            except RemoteProtocolError:
                log.warning("stored home record of %s is unreadable; ignored", user.hex()[:12])

    def learn(self, store: Store, data: bytes, *, now_ms: int) -> HomeRecord | None:
        """Verify and keep a record if it is newer than the one held; returns it if kept.

        Raises:
            RemoteProtocolError: the record is malformed or forged.
        """
        record = decode_home_record(data)
        held = self._records.get(record.user)
        if held is not None and held.issued_ms >= record.issued_ms:
            return None
        verify_home_record(record, now_ms=now_ms)
        self._adopt(record)
        store.set_setting(_RECORD_SETTING + record.user.hex(), encode_home_record(record))
        return record

    def learn_verified(self, store: Store, record: HomeRecord) -> bool:
        """Keep a record already verified by the caller if newer; True if kept."""
        held = self._records.get(record.user)
        if held is not None and held.issued_ms >= record.issued_ms:
            return False
        self._adopt(record)
        store.set_setting(_RECORD_SETTING + record.user.hex(), encode_home_record(record))
        return True

    def _adopt(self, record: HomeRecord) -> None:
        self._records[record.user] = record
        self._devices[record.user] = frozenset(cert.device for cert in record.devices)
        for cert in record.devices:
            self._certificates[cert.device] = encode_certificate(cert)

    def remember_certificate(self, device: DeviceId, certificate: bytes) -> None:
        """Keep a certificate verified elsewhere (a delivery batch) for forwarding."""
        self._certificates[device] = certificate

    def lists_device(self, user: UserId, device: DeviceId) -> bool | None:
        """Does the user's newest record list `device`? None: we hold no record of the user."""
        devices = self._devices.get(user)
        return None if devices is None else device in devices

    def record(self, user: UserId) -> HomeRecord | None:
        return self._records.get(user)

    def homes(self, user: UserId) -> tuple[str, ...]:
        """Peer ids of the user's home nodes, as their newest record says."""
        record = self._records.get(user)
        return () if record is None else record.homes

    def addresses(self, user: UserId) -> tuple[str, ...]:
        record = self._records.get(user)
        return () if record is None else record.addrs

    def certificate(self, device: DeviceId) -> bytes | None:
        return self._certificates.get(device)

    def known_users(self) -> list[UserId]:
        return list(self._records)
