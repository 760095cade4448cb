"""Home records on the mesh (SPEC §13): publishing ours, finding and learning others'.

Our record is `OwnHomes`'s; other users' are `HomeDirectory`'s. This service moves them: it puts
ours in the DHT and announces it (again when a relay reservation changes our addresses), looks
a user's up in the DHT, and adopts what hello, presence or the DHT brought (our own user's newer
record included: a device was linked or revoked).

State: `published`, whether our record went into the DHT since start (`published_once` is set
then), and whether a background put is under way or asked for again meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.relay import RelayForwarder
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.linking import send_readdress
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.identity.trust_watch import TrustWatch
from hearthmesh.node.mesh.presence import PresenceService
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.run_state import RunState
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.e2ee.keys import KeyBundle
from hearthmesh.protocol.errors import HearthError, store_failed
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.linking import MAX_HOME_ADDRS
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["HomeRecords"]

log = logging.getLogger(__name__)

READDRESS_TRIES: Final = 5
"""Times a linked home tries to give the primary its new addresses (1 s, 2 s, ... apart)."""


class HomeRecords:
    """Publishes our user's home record and adopts other users' records."""

    def __init__(
        self,
        *,
        user: UserId,
        host: P2PHost,
        store: AsyncStore,
        clock: Clock,
        directory: HomeDirectory,
        homes: OwnHomes,
        relay: RelayForwarder,
        presence: PresenceService,
        trust: TrustWatch,
        supervisor: Supervisor,
        run_state: RunState,
    ) -> None:
        self._user = user
        self._host = host
        self._store = store
        self._clock = clock
        self._directory = directory
        self._homes = homes
        self._relay = relay
        self._presence = presence
        self._trust = trust
        self._supervisor = supervisor
        self._run_state = run_state
        self.published = False
        """Our home record went into the DHT since start."""
        self.published_once = asyncio.Event()
        """Set with `published`: what a caller that needs the record in the DHT awaits."""
        self._putting = False
        self._again = False
        self._revive: _Revive = _revive_nothing

    def revive_with(self, revive: _Revive) -> None:
        """Tell `revive` each home of a user whose newer record we learn (and where from): its
        addresses may be new (a relay reservation, SPEC §10.8), so a delivery waiting on it
        tries again now."""
        self._revive = revive

    async def publish(self) -> bool:
        """Put our home record in the DHT, so nodes that never met us can find our inbox."""
        try:
            await self._host.dht_put(home_record_key(self._user), self._homes.signed_record())
        except HearthError as exc:  # no DHT peers yet: presence and hello still spread it
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("home record not published to the DHT: %s", exc)
            return False
        self.published = True
        self.published_once.set()
        return True

    def publish_soon(self) -> None:
        """Put our record in the DHT in the background: a put takes 0.15-25 s on a young
        mesh, so no dial, start or API call waits on it (SPEC §11.8.4). Calls while a put
        is under way coalesce into one more put after it, with the record as it is then."""
        if self._putting:
            self._again = True
            return
        self._putting = True
        self._supervisor.spawn(self._put_in_background(), "publish-home")

    async def _put_in_background(self) -> None:
        try:
            again = True
            while again:
                self._again = False
                if await self.publish():
                    log.info("home record published to the DHT")
                again = self._again
        finally:
            self._putting = False

    async def announce(self) -> None:
        """Our record changed: tell the mesh through presence (gossip, fast) and publish it
        in the DHT (a put may take seconds)."""
        await self._presence.announce()
        await self.publish()

    async def find(self, user: UserId) -> bool:
        """Look `user`'s home record up in the DHT and adopt it; True if one was found."""
        try:
            data = await self._host.dht_get(home_record_key(user))
            if data is None:
                return False
            await self.learn(data, source="dht")
        except HearthError as exc:
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("home of %s not found in the DHT: %s", user.hex()[:12], exc)
            return False
        return True

    async def learn(self, data: bytes, *, source: str = "record") -> None:
        """Adopt another user's home record (a contact card; `source`: where it came from, for
        the log). Raises RemoteProtocolError."""
        record = await self._store.run(
            self._directory.learn, self._store.store, data, now_ms=self._clock.now_ms()
        )
        if record is not None:
            await self._homes.consider(record, data)  # our own user's, newer: a change of devices
            for home in record.homes:
                self._revive(home, cause=source)
            await self._trust.adopted(record)  # SPEC §29.5: warn if verified keys changed
            self._relay.wake((record.user,))

    def addresses_changed(self) -> None:
        """The host's report that a relay reservation came or went (SPEC §10.7)."""
        if self._run_state.running():  # at stop, the relays' connections close too
            self._supervisor.spawn(self._readdress(), "readdress")

    async def _readdress(self) -> None:
        """Re-issue our record with our addresses as they are now, and announce it; a linked
        home asks the primary to (SPEC §10.10)."""
        if await self._homes.readdress():
            await self.announce()
        elif self._homes.primary_peer not in (None, self._host.peer_id):
            await self._give_addresses_to_primary()

    async def _give_addresses_to_primary(self) -> None:
        for attempt in range(READDRESS_TRIES):
            addrs = self._homes.own_addresses()[:MAX_HOME_ADDRS]
            try:
                if self._homes.primary_peer is not None:
                    record = await send_readdress(
                        self._host, self._homes.primary_peer, addrs, self._homes.own_bundle
                    )
                    await self.learn(record)  # the record the primary re-issued
                return
            except HearthError as exc:  # the primary is offline or refused: try again later
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.info("giving our addresses to the primary failed: %s", exc)
            await asyncio.sleep(2**attempt)
            if self._homes.own_addresses()[:MAX_HOME_ADDRS] != addrs:
                return  # changed again: the task that change started carries on

    def give_bundle_soon(self) -> None:
        """On a linked home whose key bundle our record does not list yet (it made its Olm
        account after it was linked): give it to the primary with our addresses."""
        linked = self._homes.primary_peer not in (None, self._host.peer_id)
        if linked and not self._homes.lists_own_bundle():
            self._supervisor.spawn(self._give_addresses_to_primary(), "give-bundle")

    async def readdress_home(
        self, peer: str, addrs: tuple[str, ...], bundle: KeyBundle | None
    ) -> bytes:
        """On the primary: a linked home gave its addresses (and key bundle); re-issue the
        record with them, tell the mesh (in the background) and return the record. Raises
        NotAuthorized or BadSignature."""
        if await self._homes.readdress_sibling(peer, addrs, bundle):
            self._supervisor.spawn(self.announce(), "announce-home")
        return self._homes.signed_record()

    async def add_home(
        self, peer_id: str, addrs: tuple[str, ...], device: DeviceId
    ) -> tuple[bytes, bytes]:
        """A new device was linked: list it, then tell the mesh (in the background)."""
        answer = await self._homes.add(peer_id, addrs, device)
        self._supervisor.spawn(self.announce(), "announce-home")
        return answer


class _Revive(Protocol):
    def __call__(self, peer_id: str, *, cause: str) -> None: ...


def _revive_nothing(peer_id: str, *, cause: str) -> None:
    """The revive hook until `revive_with` sets one."""
