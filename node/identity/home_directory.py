"""Where users live and which devices are theirs: verified home records, newest wins.

Fed by presence gossip and the hello exchange between connected peers; read by the delivery
worker to find a recipient's home node. Records are kept in the store's settings, so the outbox
can still be served after a restart before anyone has announced themselves again.

Bounded (SPEC §13.6): the records of our users, their contacts and co-members are always kept;
strangers' records are kept up to `max_strangers`, the one learned longest ago going first, and
dropped by the purge once older than `record_max_age_ms`. Certificates remembered from
deliveries outside any kept record are a bounded LRU.

State: other users' home records, the device certificates they and delivery batches carry,
and presence, by user and by device; who is told of a newer record kept (`watch`). Our own
user's record is `OwnHomes`'s, our own keys the `Keyring`'s (ARCHITECTURE §7).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from hearthmesh.node.mesh.relationships import knows
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.home_record import (
    HomeRecord,
    decode_home_record,
    encode_home_record,
    verify_home_record,
)
from hearthmesh.protocol.identity import DeviceId, UserId, decode_certificate, encode_certificate
from hearthmesh.storage.api import Store

__all__ = [
    "DEFAULT_MAX_LOOSE_CERTIFICATES",
    "DEFAULT_MAX_STRANGERS",
    "DEFAULT_RECORD_MAX_AGE_MS",
    "HomeDirectory",
    "Presence",
]

DEFAULT_MAX_STRANGERS: Final = 2_000
"""Strangers' home records kept (SPEC §13.6)."""
DEFAULT_MAX_LOOSE_CERTIFICATES: Final = 4_096
"""Certificates kept from deliveries, beyond those in kept records."""
DEFAULT_RECORD_MAX_AGE_MS: Final = 30 * 24 * 3600 * 1000
"""A stranger's record issued longer ago than this is purged."""

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

    def __init__(
        self,
        *,
        local_users: set[UserId] | None = None,
        max_strangers: int = DEFAULT_MAX_STRANGERS,
        max_loose_certificates: int = DEFAULT_MAX_LOOSE_CERTIFICATES,
        record_max_age_ms: int = DEFAULT_RECORD_MAX_AGE_MS,
    ) -> None:
        self._local = local_users if local_users is not None else set()
        self._max_strangers = max_strangers
        self._max_loose = max_loose_certificates
        self._max_age_ms = record_max_age_ms
        self._records: dict[UserId, HomeRecord] = {}
        self._strangers: OrderedDict[UserId, None] = OrderedDict()
        """Users whose record we keep with no relationship to ours, learned longest ago first."""
        self._certificates: dict[DeviceId, bytes] = {}
        """Certificates of the devices of kept records."""
        self._loose: OrderedDict[DeviceId, bytes] = OrderedDict()
        """Certificates from deliveries, least recently remembered first."""
        self._devices: dict[UserId, frozenset[DeviceId]] = {}
        self.presence: dict[UserId, Presence] = {}
        self._watchers: list[Callable[[UserId], None]] = []

    def watch(self, learnt: Callable[[UserId], None]) -> None:
        """Call `learnt(user)` whenever a newer record of `user` is kept from now on."""
        self._watchers.append(learnt)

    def load(self, store: Store, users: list[UserId]) -> None:
        """Read the stored records of `users` (the outbox's destinations, say)."""
        for user in users:
            data = store.get_setting(_RECORD_SETTING + user.hex())
            if data is None:
                continue
            try:
                self._adopt(decode_home_record(data), known=True)
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
        return record if self.learn_verified(store, record) else None

    def learn_verified(self, store: Store, record: HomeRecord) -> bool:
        """Keep a record already verified by the caller if newer; True if kept."""
        held = self._records.get(record.user)
        if held is not None and held.issued_ms >= record.issued_ms:
            return False
        known = knows(store, self._local, record.user)
        self._adopt(record, known=known)
        store.set_setting(_RECORD_SETTING + record.user.hex(), encode_home_record(record))
        while len(self._strangers) > self._max_strangers:
            self._forget(store, next(iter(self._strangers)))
        kept = record.user in self._records
        if kept:
            for learnt in self._watchers:
                learnt(record.user)
        return kept

    def _adopt(self, record: HomeRecord, *, known: bool) -> None:
        self._drop_certificates(record.user)
        self._records[record.user] = record
        self._devices[record.user] = frozenset(cert.device for cert in record.devices)
        for cert in record.devices:
            self._certificates[cert.device] = encode_certificate(cert)
        self._strangers.pop(record.user, None)
        if not known:
            self._strangers[record.user] = None  # newest learned last

    def _drop_certificates(self, user: UserId) -> None:
        for device in self._devices.pop(user, frozenset()):
            self._certificates.pop(device, None)

    def _forget(self, store: Store, user: UserId) -> None:
        """Drop a stranger's record (and presence) here and in the store."""
        self._strangers.pop(user, None)
        self._records.pop(user, None)
        self.presence.pop(user, None)
        self._drop_certificates(user)
        store.delete_setting(_RECORD_SETTING + user.hex())

    def purge(self, store: Store, *, now_ms: int) -> int:
        """Drop strangers' records past their age and expired loose certificates; a stranger
        who became a contact or co-member since is kept from now on. Returns how many went."""
        removed = 0
        for user in list(self._strangers):
            if knows(store, self._local, user):
                del self._strangers[user]
            elif self._records[user].issued_ms + self._max_age_ms <= now_ms:
                self._forget(store, user)
                removed += 1
        for device, certificate in list(self._loose.items()):
            try:
                expires_ms = decode_certificate(certificate).expires_ms
            except RemoteProtocolError:
                expires_ms = 0  # verified when remembered; unreadable now means drop it
            if expires_ms is not None and expires_ms <= now_ms:
                del self._loose[device]
                removed += 1
        return removed

    def remember_certificate(self, device: DeviceId, certificate: bytes) -> None:
        """Keep a certificate verified elsewhere (a delivery batch) for forwarding."""
        if self._certificates.get(device) == certificate:
            return
        self._loose[device] = certificate
        self._loose.move_to_end(device)
        while len(self._loose) > self._max_loose:
            self._loose.popitem(last=False)

    def lists_device(self, user: UserId, device: DeviceId) -> bool | None:
        """Does the user's newest record list `device`? None: we hold no record of the user."""
        devices = self._devices.get(user)
        return None if devices is None else device in devices

    def devices(self, user: UserId) -> frozenset[DeviceId] | None:
        """The devices the user's newest record lists; None: we hold no record of the user."""
        return self._devices.get(user)

    def record(self, user: UserId) -> HomeRecord | None:
        return self._records.get(user)

    def known(self, users: Iterable[UserId]) -> set[UserId]:
        """Those of `users` whose record we hold."""
        return {user for user in users if user in self._records}

    def homes(self, user: UserId) -> tuple[str, ...]:
        """Peer ids of the user's home nodes, as their newest record says."""
        record = self._records.get(user)
        return () if record is None else record.homes

    def knows(self, user: UserId) -> bool:
        """A record naming at least one of the user's homes is held."""
        return bool(self.homes(user))

    def issued_ms(self, user: UserId) -> int | None:
        """When the user's newest record we hold was issued, if it names a home (else None):
        what tells a record learnt since apart from the one held (`HomeLookups`)."""
        record = self._records.get(user)
        return record.issued_ms if record is not None and record.homes else None

    def addresses(self, user: UserId) -> tuple[str, ...]:
        record = self._records.get(user)
        return () if record is None else record.addrs

    def certificate(self, device: DeviceId) -> bytes | None:
        return self._certificates.get(device) or self._loose.get(device)

    def known_users(self) -> list[UserId]:
        return list(self._records)

    @property
    def strangers(self) -> int:
        """Strangers' records kept now."""
        return len(self._strangers)
