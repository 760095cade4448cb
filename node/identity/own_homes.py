"""Our own user's home record: which nodes are our user's homes, and changing it (SPEC §22).

The primary re-issues the record at every start (its addresses may have changed) and when a
device is linked or revoked; a linked node takes the record the primary issued and adopts a
newer one when it hears of it. The homes other than this node are its siblings (SPEC §22.3),
which get every message this node takes in from outside.

Words, one each: "own homes" are all the homes our user's record names, this node included;
"siblings" are the own homes other than this node, known by peer id (`sibling_peers`) or as
outbox destinations (`sibling_destinations`). This module owns our user's current record and
what follows from it; everything else asks it.
"""

from __future__ import annotations

from collections.abc import Callable

from hearthmesh.node.clock import Clock
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.keyring import HOME_RECORD_SETTING, Keyring
from hearthmesh.protocol.destinations import node_destination
from hearthmesh.protocol.e2ee.keys import KeyBundle, verify_key_bundle
from hearthmesh.protocol.errors import LocalProtocolError, NotAuthorized, NotFound, StorageError
from hearthmesh.protocol.home_record import (
    HomeRecord,
    decode_home_record,
    encode_home_record,
    issue_home_record,
)
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    KeyPair,
    encode_certificate,
    issue_certificate,
)
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["OwnHomes"]

_MAX_HOMES = 8
_MAX_ADDRS = 16
_MAX_DEVICES = 16


class OwnHomes:
    """The current record of our user and the sibling homes it names."""

    def __init__(
        self,
        *,
        keyring: Keyring,
        clock: Clock,
        peer_id: str,
        addrs: Callable[[], tuple[str, ...]],
        store: AsyncStore,
        directory: HomeDirectory,
        own_bundle: KeyBundle,
    ) -> None:
        """`own_bundle`: this device's key bundle (SPEC §27.1), listed in the record."""
        self._keyring = keyring
        self._own_bundle = own_bundle
        self._clock = clock
        self._peer_id = peer_id
        self._addrs = addrs
        self._store = store
        self._directory = directory
        self.record = b""
        """Our user's signed home record (bytes as issued)."""
        self._sibling_destinations: tuple[bytes, ...] = ()
        self._sibling_peers: frozenset[str] = frozenset()
        self.primary_peer: str | None = None
        """The peer id of our user's primary home (the first in the record)."""

    # --- start --------------------------------------------------------------------------

    def load(self, store: Store) -> None:
        """Runs in a store write batch at start: adopt the stored record, re-issued if primary.

        The primary keeps the homes and devices of linked nodes from its last record and puts
        its own current addresses first; a linked node uses the record the primary issued.
        """
        stored = store.get_setting(HOME_RECORD_SETTING)
        previous = decode_home_record(stored) if stored is not None else None
        if self._keyring.user is None:
            if stored is None:
                raise StorageError("a linked device without its home record: link it again")
            self._adopt(stored)
            self._directory.learn_verified(store, decode_home_record(stored))
            return
        me, device = self._peer_id, self._keyring.device_id
        homes = (me, *[h for h in (previous.homes if previous else ()) if h != me])
        addrs = (
            *self._addrs(),
            *[a for a in (previous.addrs if previous else ()) if not a.endswith(me)],
        )
        devices = (
            self._keyring.certificate,
            *[d for d in (previous.devices if previous else ()) if d.device != device],
        )
        record = self._issue(self._keyring.user, previous, homes, addrs, devices)
        self._adopt(encode_home_record(record))
        store.set_setting(HOME_RECORD_SETTING, self.record)
        self._directory.learn_verified(store, record)  # our devices' bundles, for our sends

    # --- changes (primary) --------------------------------------------------------------

    async def add(
        self, peer_id: str, addrs: tuple[str, ...], device: DeviceId
    ) -> tuple[bytes, bytes]:
        """Certify a newly linked device and list its node; (certificate, new record)."""
        user_key = self._primary_key("links new devices")
        certificate = issue_certificate(user_key, device, created_ms=self._clock.now_ms())
        current = decode_home_record(self.record)
        record = self._issue(
            user_key,
            current,
            (*current.homes, peer_id),
            (*current.addrs, *addrs),
            (*current.devices, certificate),
        )
        await self._keep(record)
        return encode_certificate(certificate), self.record

    async def readdress(self) -> bool:
        """Our node's addresses changed (a relay reservation came or went, SPEC §10.7): the
        primary re-issues the record with them first. False if nothing changed, or if we are
        a linked node (only the primary signs the record)."""
        if self._keyring.user is None:
            return False
        current = decode_home_record(self.record)
        me = self._peer_id
        addrs = (*self._addrs(), *[a for a in current.addrs if not a.endswith(me)])
        if addrs[:_MAX_ADDRS] == current.addrs:
            return False
        await self._keep(
            self._issue(self._keyring.user, current, current.homes, addrs, current.devices)
        )
        return True

    async def readdress_sibling(
        self, peer: str, addrs: tuple[str, ...], bundle: KeyBundle | None = None
    ) -> bool:
        """A linked home of ours gave its addresses as they are now (SPEC §10.10), and its
        device's key bundle (SPEC §27.1): the primary re-issues the record with them in place
        of that home's old ones. False if nothing changed.

        Raises:
            NotAuthorized: we are not the primary, `peer` is not a linked home of our user, or
                the bundle is not of the device that home runs.
            BadSignature: the bundle is not signed by its device.
        """
        user_key = self._primary_key("lists addresses")
        current = decode_home_record(self.record)
        if peer == self._peer_id or peer not in current.homes:
            raise NotAuthorized("only a linked home of this user gives its addresses")
        if bundle is not None:
            position = current.homes.index(peer)
            devices = current.devices
            if position >= len(devices) or devices[position].device != bundle.device:
                raise NotAuthorized("a home gives the key bundle of its own device only")
            verify_key_bundle(bundle)
        others = tuple(a for a in current.addrs if not a.endswith(f"/p2p/{peer}"))
        addrs = (*others, *addrs)[:_MAX_ADDRS]
        extra = () if bundle is None else (bundle,)
        if addrs == current.addrs and all(b in current.bundles for b in extra):
            return False
        await self._keep(
            self._issue(user_key, current, current.homes, addrs, current.devices, extra)
        )
        return True

    def sibling_bundle(self, peer: str) -> KeyBundle | None:
        """The key bundle our record lists for the device on our sibling home `peer`."""
        if peer == self._peer_id:
            return None
        return decode_home_record(self.record).bundle_at_home(peer)

    def lists_own_bundle(self) -> bool:
        """Does our user's record list this device's key bundle (a linked device gives it to
        the primary after it starts)?"""
        return self._own_bundle in decode_home_record(self.record).bundles

    @property
    def own_bundle(self) -> KeyBundle:
        """This device's key bundle."""
        return self._own_bundle

    async def revoke(self, device: DeviceId) -> None:
        """Drop a device and the home it lives on (they share a position in the record)."""
        user_key = self._primary_key("revokes devices")
        if device == self._keyring.device_id:
            raise LocalProtocolError("the primary cannot revoke itself")
        current = decode_home_record(self.record)
        positions = [c.device for c in current.devices]
        if device not in positions:
            raise NotFound("no such device")
        index = positions.index(device)
        gone = current.homes[index] if index < len(current.homes) else None
        record = self._issue(
            user_key,
            current,
            tuple(h for h in current.homes if h != gone),
            tuple(a for a in current.addrs if gone is None or not a.endswith(gone)),
            tuple(c for c in current.devices if c.device != device),
        )
        await self._keep(record)

    async def consider(self, record: HomeRecord, data: bytes) -> bool:
        """A record of our own user was learned; adopt it if newer (the primary changed it)."""
        if record.user != self._keyring.user_id:
            return False
        if record.issued_ms <= decode_home_record(self.record).issued_ms:
            return False
        self._adopt(data)
        await self._store.run(self._store.store.set_setting, HOME_RECORD_SETTING, data)
        return True

    def devices(self) -> list[tuple[DeviceCertificate, str | None]]:
        """Our user's devices, each with the peer id of the home it lives on."""
        record = decode_home_record(self.record)
        homes = dict(zip(record.devices, record.homes, strict=False))
        return [(cert, homes.get(cert)) for cert in record.devices]

    # --- reading (bound methods are what the services are given) ------------------------

    def own_addresses(self) -> tuple[str, ...]:
        """This node's addresses now, each ending in `/p2p/<our peer id>`."""
        return tuple(a for a in self._addrs() if a.endswith(f"/p2p/{self._peer_id}"))

    def signed_record(self) -> bytes:
        """Our user's signed home record, as issued (hello, presence and the DHT carry it)."""
        return self.record

    def sibling_destinations(self) -> tuple[bytes, ...]:
        """Outbox destinations of our siblings: each of our sends is queued for them too."""
        return self._sibling_destinations

    def sibling_peers(self) -> frozenset[str]:
        """Peer ids of our siblings."""
        return self._sibling_peers

    def is_sibling(self, peer: str) -> bool:
        """True if `peer` is another home of our user (SPEC §22.3)."""
        return peer in self._sibling_peers

    def is_clock_source(self, peer: str) -> bool:
        """True if our clock takes its time from `peer` (SPEC §24): the primary's home, for a
        linked node only; another linked device may not be corrected yet."""
        return not self._keyring.is_primary and peer == self.primary_peer

    # --- inside -------------------------------------------------------------------------

    def _primary_key(self, what: str) -> KeyPair:
        if self._keyring.user is None:
            raise NotAuthorized(f"only the primary device {what}")
        return self._keyring.user

    def _issue(
        self,
        user_key: KeyPair,
        previous: HomeRecord | None,
        homes: tuple[str, ...],
        addrs: tuple[str, ...],
        devices: tuple[DeviceCertificate, ...],
        new_bundles: tuple[KeyBundle, ...] = (),
    ) -> HomeRecord:
        """The record, with the bundles of the previous one, ours and `new_bundles` in place
        of older ones of their devices (bundles of devices it no longer lists drop out)."""
        newer = previous.issued_ms + 1 if previous is not None else 0
        bundles = {b.device: b for b in (previous.bundles if previous is not None else ())}
        for bundle in (self._own_bundle, *new_bundles):
            bundles[bundle.device] = bundle
        return issue_home_record(
            user_key,
            issued_ms=max(self._clock.now_ms(), newer),
            homes=homes[:_MAX_HOMES],
            addrs=addrs[:_MAX_ADDRS],
            devices=devices[:_MAX_DEVICES],
            bundles=tuple(bundles.values()),
        )

    def _adopt(self, data: bytes) -> None:
        self.record = data
        homes = decode_home_record(data).homes
        # The primary issues the first record naming only itself; linked homes are appended.
        self.primary_peer = homes[0] if homes else None
        others = [h for h in homes if h != self._peer_id]
        self._sibling_destinations = tuple(node_destination(h) for h in others)
        self._sibling_peers = frozenset(others)

    async def _keep(self, record: HomeRecord) -> None:
        self._adopt(encode_home_record(record))
        await self._store.run(self._store.store.set_setting, HOME_RECORD_SETTING, self.record)
        await self._store.run(self._directory.learn_verified, self._store.store, record)
