"""Presence: who is online, from signed heartbeats of our contacts (SPEC §14.2, §32.4).

Each node tells its user's contacts every `interval` that the user is online, with a PRESENCE
envelope that carries the user's home record, on direct streams (`ContactSignals`): a user not
heard from within the TTL is offline, and a node that stops gracefully says so at once. The
mesh-wide presence topic carries the home record alone (status RECORD), when it changed and
every `RECORD_EVERY` intervals, stretched as the mesh grows (`RecordPacing`), so every node
still learns where each inbox lives but no one learns presence from it. State owned: when our
record goes on the topic again (`RecordPacing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock, HybridClock
from hearthmesh.node.events import NodeEvent, PresenceChanged
from hearthmesh.node.identity.home_directory import HomeDirectory, Presence
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.identity.trust_watch import TrustWatch
from hearthmesh.node.mesh.record_pacing import RECORD_EVERY, RecordPacing
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.gossip import GossipMessage, Subscription
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.social.signals import ContactSignals
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.envelope import Kind, RoomId, seal
from hearthmesh.protocol.errors import HearthError, store_failed
from hearthmesh.protocol.gossip import (
    PRESENCE_CONTENT_TYPE,
    PRESENCE_TOPIC,
    GossipItem,
    PresenceStatus,
    decode_gossip,
    decode_presence,
    encode_gossip,
    encode_presence,
)
from hearthmesh.protocol.gossip import (
    Presence as PresencePayload,
)
from hearthmesh.protocol.signals import Signal
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["PRESENCE_ROOM", "RECORD_EVERY", "PresenceService"]

log = logging.getLogger(__name__)

PRESENCE_ROOM: Final = RoomId(bytes(32))
"""Ephemeral envelopes that belong to no room name the all-zero room (SPEC §14.2)."""


class PresenceService:
    """Announces our user and tracks everyone else's presence."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        directory: HomeDirectory,
        keyring: Keyring,
        clock: Clock,
        hlc: HybridClock,
        home_record: Callable[[], bytes],
        emit: Callable[[NodeEvent], None],
        interval_ms: int,
        ttl_ms: int,
        share: bool,
        certificates: VerifiedCertificates,
        validator_certificates: VerifiedCertificates,
        trust: TrustWatch,
        signals: ContactSignals,
    ) -> None:
        self._signals = signals
        signals.on_presence(self._take_from_contact)
        self._pacing = RecordPacing()
        """When our unchanged record goes on the topic again (SPEC §32.4.3)."""
        self.announcements = 0
        """Presence rounds done (for tests and status)."""
        self._certificates = certificates
        self._trust = trust
        """The event loop's cache (the listener), shared with the receiver."""
        self._validator_certificates = validator_certificates
        """The trio thread's cache (the validator): one owner per thread."""
        self._host = host
        self._store = store
        self._directory = directory
        self._keyring = keyring
        self._clock = clock
        self._hlc = hlc
        self._home_record = home_record
        self._emit = emit
        self._interval_s = interval_ms / 1000
        self._ttl_ms = ttl_ms
        self._share = share
        self._revive: Callable[[str], None] = _revive_nothing

    def revive_with(self, revive: Callable[[str], None]) -> None:
        """Tell `revive` each home of a user whose newer record a presence brings: its
        addresses may be new (a relay reservation, SPEC §10.8), so a delivery waiting on it
        tries again now."""
        self._revive = revive

    def payload(self, status: PresenceStatus) -> bytes:
        """A signed presence announcement of our user, ready to publish."""
        envelope = seal(
            self._keyring.device,
            kind=Kind.PRESENCE,
            room=PRESENCE_ROOM,
            sender_user=self._keyring.user_id,
            seq=1,  # ephemeral: freshness comes from the HLC, never from the sequence
            hlc=self._hlc.ephemeral(),
            content_type=PRESENCE_CONTENT_TYPE,
            body=encode_presence(status, self._ttl_ms, self._home_record()),
        )
        return encode_gossip(self._keyring.certificate_bytes, envelope.wire)

    def check(self, message: GossipMessage) -> None:
        """Gossip check for the presence topic: runs on the trio thread, pure.

        Raises:
            RemoteProtocolError: not a verified presence announcement.
        """
        now = self._clock.now_ms()
        item = decode_gossip(message.data, now_ms=now, certificates=self._validator_certificates)
        decode_presence(item.envelope, now_ms=now)

    async def announce(self, status: PresenceStatus = PresenceStatus.ONLINE) -> None:
        """Tell our contacts our presence now, and publish our record on the topic when it is
        due; a mesh without peers yet is not an error."""
        if not self._share:
            return
        self.announcements += 1
        try:
            await self._signals.send(self.payload(status), await self._signals.contacts())
            if status is not PresenceStatus.OFFLINE and self._record_due():
                await self._host.publish(PRESENCE_TOPIC, self.payload(PresenceStatus.RECORD))
        except P2PError as exc:
            log.debug("presence not published: %s", exc)
        except HearthError as exc:  # e.g. our own validator: a clock not yet corrected
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("presence not published: %s", exc)

    def _record_due(self) -> bool:
        return self._pacing.due(self._home_record(), self._host.topic_peers(PRESENCE_TOPIC))

    async def run(self, subscription: Subscription) -> None:
        """Announce every interval, expire silent users, and take others' announcements."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(subscription))
            while True:
                await self.announce()
                self._expire()
                await asyncio.sleep(self._interval_s)

    async def _listen(self, subscription: Subscription) -> None:
        async for message in subscription:
            try:
                now = self._clock.now_ms()
                item = decode_gossip(message.data, now_ms=now, certificates=self._certificates)
                if await self._learn(item) is not None:  # the topic tells where homes are
                    self._pacing.heard(item.envelope.sender_user)
            except HearthError as exc:  # validated on the trio thread; a race with expiry only
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.debug("presence from %s ignored: %s", message.origin[-8:], exc)

    async def _take_from_contact(self, signal: Signal) -> None:
        """A contact's presence, pushed to us (SPEC §32.4): its record, and their status."""
        now = self._clock.now_ms()
        item = signal.item
        presence = await self._learn(item, signal.presence)
        user = item.envelope.sender_user
        if presence is None or presence.status is PresenceStatus.RECORD:
            return
        if self._directory.record(user) is None:
            return  # a stranger past the directory's bound (SPEC §13.6): nothing kept of them
        online = presence.status is PresenceStatus.ONLINE
        held = self._directory.presence.get(user)
        seen = item.envelope.hlc.wall_ms
        if held is not None and seen < held.last_seen_ms:
            return  # an older announcement overtaken by a newer one
        self._directory.presence[user] = Presence(
            online=online, last_seen_ms=seen, expires_ms=now + presence.ttl_ms if online else now
        )
        if held is None or held.online != online:
            self._emit(PresenceChanged(user=user, online=online, last_seen_ms=seen))

    async def _learn(
        self, item: GossipItem, decoded: PresencePayload | None = None
    ) -> PresencePayload | None:
        """Adopt the home record a verified announcement carries (`decoded`: its body, when
        already decoded); None for our own."""
        presence = (
            decode_presence(item.envelope, now_ms=self._clock.now_ms())
            if decoded is None
            else decoded
        )
        if item.envelope.sender_user == self._keyring.user_id:
            return None
        newer = await self._store.run(
            self._directory.learn_verified, self._store.store, presence.home_record
        )
        if newer:
            for home in presence.home_record.homes:
                self._revive(home)
            await self._trust.adopted(presence.home_record)  # SPEC §29.5
        return presence

    def _expire(self) -> None:
        now = self._clock.now_ms()
        for user, presence in self._directory.presence.items():
            if presence.online and presence.expires_ms <= now:
                presence.online = False
                self._emit(
                    PresenceChanged(user=user, online=False, last_seen_ms=presence.last_seen_ms)
                )

    async def stop(self) -> None:
        """Say offline before the host stops (a graceful stop)."""
        with contextlib.suppress(HearthError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.announce(PresenceStatus.OFFLINE)


def _revive_nothing(peer: str) -> None:
    """The revive hook until `revive_with` sets one."""
