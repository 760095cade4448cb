"""`Node`: one home node and relay, embeddable as `async with Node(config) as node:`.

The composition root of node/: it opens the store, loads or creates the keys, starts the libp2p
host and the services (outbox worker, relay forwarder, presence, gossip listeners) in one task
group, and offers the embedding API: rooms, sending, history and an event stream. Stopping
announces offline, cancels the services, stops the host and closes the store, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, Self

from hearthmesh.node.clock import Clock, CorrectedClock, HybridClock, SystemClock
from hearthmesh.node.config import NodeConfig
from hearthmesh.node.delivery.fetch import FetchService
from hearthmesh.node.delivery.gap_fetch import GapFetcher
from hearthmesh.node.delivery.gossip_out import GossipPublisher
from hearthmesh.node.delivery.inbox import Inbox, StoreOutcome
from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.delivery.outgoing import Outgoing
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.delivery.receiver import Receiver
from hearthmesh.node.delivery.relay import RelayForwarder
from hearthmesh.node.delivery.relay_choice import RelayChooser
from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.delivery.sync import SyncReport, SyncService
from hearthmesh.node.events import MembershipChanged, NodeEvent
from hearthmesh.node.identity.home_directory import HomeDirectory, Presence
from hearthmesh.node.identity.home_lookup import HomeLookups
from hearthmesh.node.identity.keyring import Keyring, load_or_create_keyring
from hearthmesh.node.identity.linking import LinkService
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.media.fetch import MediaFetcher
from hearthmesh.node.media.server import MediaServer
from hearthmesh.node.mesh.greetings import Greetings
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.mesh.presence import PresenceService
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.dht import home_record_rules
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.node.purge import PurgeService
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.rooms.topics import ROOM_TOPIC_PREFIX, RoomTopics
from hearthmesh.node.subscribers import EventHub
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.arrival import ArrivalRules
from hearthmesh.protocol.canonical import decode_canonical
from hearthmesh.protocol.destinations import destination_peer
from hearthmesh.protocol.digest import HistoryDigest
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, load_envelope
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    NotAuthorized,
    RemoteProtocolError,
)
from hearthmesh.protocol.fetch import FETCH_PROTOCOL
from hearthmesh.protocol.gossip import (
    PRESENCE_TOPIC,
)
from hearthmesh.protocol.hello import HELLO_PROTOCOL
from hearthmesh.protocol.hlc import ZERO, Timestamp, decode_timestamp, encode_timestamp
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    UserId,
)
from hearthmesh.protocol.inbound import InboundLedger
from hearthmesh.protocol.linking import LINK_PROTOCOL, LinkCode
from hearthmesh.protocol.media import MEDIA_PROTOCOL
from hearthmesh.protocol.membership import (
    Action,
    MembershipChange,
    Role,
    RoomState,
)
from hearthmesh.protocol.private import (
    PRIVATE_CONTENT_TYPE,
    encode_conversation_deleted,
    self_room_id,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.protocol.sync import SYNC_PROTOCOL
from hearthmesh.storage.api import (
    Cursor,
    Direction,
    HistoryPage,
    Store,
)
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

__all__ = ["Node"]

_HLC_SETTING: Final = "hlc.last"
_FIRST_PUBLISH_DELAY_S: Final = (10.0, 30.0)
"""Seconds after a first peer that did not come by `connect` before we publish our record."""

log = logging.getLogger(__name__)


class Node:
    """A home node for one user (and its device) and a relay for everyone else."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self._clock = CorrectedClock(clock or SystemClock())
        self._sync_store = store
        self._stack = contextlib.AsyncExitStack()
        self._events = EventHub()
        self._hlc = HybridClock(self._clock)
        self._clock.on_correction(self._hlc.clock_corrected)
        self._supervisor = Supervisor()
        self._published = False
        """Our home record went into the DHT since start."""
        self._started = False

    # --- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open everything; on failure, close what was opened and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        self._started = True

    async def _start(self) -> None:
        data_dir = Path(self.config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # noqa: ASYNC240 - once, at start
        store = self._sync_store or LmdbStore(
            data_dir / "store", relay_quota=self.config.relay_quota
        )
        self._store = await self._stack.enter_async_context(AsyncStore(store))
        self.keyring: Keyring = await self._store.run(
            load_or_create_keyring, store, now_ms=self._clock.now_ms, rng=secrets.token_bytes
        )
        self._hlc.restore(await self._store.run(_restored_hlc, store, self.keyring.user_id))
        self._stack.push_async_callback(self._save_hlc)
        local = {self.keyring.user_id}
        self._directory = HomeDirectory(
            local_users=local,
            max_strangers=self.config.directory_max_strangers,
            max_loose_certificates=self.config.directory_max_certificates,
            record_max_age_ms=self.config.directory_record_max_age_ms,
        )
        self._rooms = RoomRegistry(local, limits=self.config.membership_limits)
        self._release = ReleaseOrder()
        self._inbox = Inbox(
            local_users=local,
            rules=ArrivalRules(local, deferrals=self.config.deferrals),
            rooms=self._rooms,
            release=self._release,
            directory=self._directory,
            relay_ttl_ms=self.config.relay_ttl_ms,
            siblings=lambda: self._homes.siblings,
        )
        dht_validate, dht_select = home_record_rules(self._clock.now_ms)
        self._host = await self._stack.enter_async_context(
            P2PHost(
                HostConfig(
                    identity_seed=self.keyring.node.seed,
                    listen_addrs=list(self.config.listen_addrs),
                    enable_mdns=self.config.enable_mdns,
                    message_id=_gossip_message_id,
                    dht_validate=dht_validate,
                    dht_select=dht_select,
                    inbound=self.config.inbound,
                    announce_addrs=list(self.config.announce_addrs),
                    autonat_confirmations=self.config.autonat_confirmations,
                    relay_service=self.config.relay_service,
                    relay_limits=self.config.relay_limits,
                    relay_reservations=self.config.relay_reservations,
                    # Co-members' homes first, then peers of good standing (SPEC §11.7).
                    relay_rank=lambda _connected: self._relay_chooser.choose(()),
                )
            )
        )
        self._standing = PeerStanding(
            clock=self._clock,
            own_peer=self._host.peer_id,
            protected=lambda peer: peer in self._homes.sibling_peers,
            disconnect=self._host.disconnect_nowait,
            policy=self.config.standing,
            prefix_policy=self.config.prefixes,
        )
        self._links = PeerLinks(self._host, on_ack=self._standing.exchanged)
        self._stack.push_async_callback(self._links.aclose)
        self._host.set_peer_filter(self._standing.admits)
        self._host.set_refusal_handler(self._standing.refused)  # a stream's outcome
        self._supervisor.set_charge(self._standing.refused_item)  # one contained item
        self._greetings = Greetings(meet=self._meet, spawn=self._spawn)
        self._host.set_connection_handler(self._connection_changed)
        self._receiver = Receiver(
            inbox=self._inbox,
            store=self._store,
            keyring=self.keyring,
            clock=self._clock,
            hlc=self._hlc,
            emit=self._events.emit,
            on_outcome=self._after_store,
            is_sibling=lambda peer: peer in self._homes.sibling_peers,
            standing=self._standing,
        )
        self._home_lookups = HomeLookups(self.find_home, clock=self._clock, rng=secrets.token_bytes)
        relays = self._relay_chooser = RelayChooser(
            host=self._host,
            standing=self._standing,
            directory=self._directory,
            co_members=self._co_members,
            rng=secrets.token_bytes,
            policy=self.config.relay_choice,
        )
        self._outbox = OutboxWorker(
            store=self._store,
            relays=relays,
            links=self._links,
            directory=self._directory,
            keyring=self.keyring,
            clock=self._clock,
            rng=secrets.token_bytes,
            emit=self._events.emit,
            poll_ms=self.config.retry_poll_ms,
            find_home=self._home_lookups.find,
            probe_max_ms=self.config.outage_probe_max_ms,
        )
        self._relay = RelayForwarder(
            store=self._store,
            links=self._links,
            directory=self._directory,
            clock=self._clock,
            poll_ms=max(self.config.retry_poll_ms, 1000),
        )
        self._purge = PurgeService(
            store=self._store,
            directory=self._directory,
            clock=self._clock,
            interval_ms=self.config.purge_interval_ms,
            batch=self.config.purge_batch,
            retention_ms=self.config.history_retention_ms,
        )
        self._presence = PresenceService(
            host=self._host,
            store=self._store,
            directory=self._directory,
            keyring=self.keyring,
            clock=self._clock,
            hlc=self._hlc,
            home_record=self.home_record,
            emit=self._events.emit,
            interval_ms=self.config.presence_interval_ms,
            ttl_ms=self.config.presence_ttl_ms,
            share=self.config.share_presence,
            certificates=self._receiver.certificates,
        )
        self._homes = OwnHomes(
            keyring=self.keyring,
            clock=self._clock,
            peer_id=self._host.peer_id,
            addrs=lambda: self.config.announce_addrs or tuple(self._host.listen_addrs),
            store=self._store,
            directory=self._directory,
        )
        await self._store.run(self._homes.load, store)
        self._host.set_address_handler(self._addresses_changed)
        self._linking = LinkService(
            add_home=self._add_home,
            now_ms=self._clock.now_ms,
            rng=secrets.token_bytes,
            standing=self._standing,
        )
        self._serve(LINK_PROTOCOL, self._linking.serve)
        self._sync = SyncService(
            host=self._host,
            store=self._store,
            rooms=self._rooms,
            user=self.keyring.user_id,
            is_sibling=lambda peer: peer in self._homes.sibling_peers,
            now_ms=self._clock.now_ms,
            wake_outbox=self._outbox.wake,
            on_refused=self._standing.refused,
        )
        self._serve(SYNC_PROTOCOL, self._sync.serve)
        self._serve("/hearthmesh/deliver/0", self._receiver.serve_deliver)
        self._hello = HelloService(
            host=self._host,
            clock=self._clock,
            home_record=self.home_record,
            learn=self.learn_home_record,
            # Only the primary's clock: another linked device may not be corrected yet.
            takes_time_from=lambda peer: (
                not self.keyring.is_primary and peer == self._homes.primary_peer
            ),
            standing=self._standing,
        )
        self._serve(HELLO_PROTOCOL, self._hello.serve)
        media_server = MediaServer(
            store=self._store,
            directory=self._directory,
            own_user=self.keyring.user_id,
            own_homes=lambda: self._homes.sibling_peers,
            on_refused=self._standing.refused,
            clock=self._clock,
        )
        self._serve(MEDIA_PROTOCOL, media_server.serve)
        self.media = MediaFetcher(
            host=self._host,
            links=self._links,
            store=self._store,
            directory=self._directory,
            clock=self._clock,
            rng=secrets.token_bytes,
            find_home=self._home_lookups.find,
        )
        """Fetches the media that stored messages reference (SPEC §25); the API waits on it."""
        self._fetch = FetchService(
            host=self._host,
            store=self._store,
            rooms=self._rooms,
            directory=self._directory,
            is_sibling=lambda peer: peer in self._homes.sibling_peers,
            certificate_of=self._certificate_of,
            on_refused=self._standing.refused,
            clock=self._clock,
        )
        self._serve(FETCH_PROTOCOL, self._fetch.serve)
        self._gaps = GapFetcher(
            release=self._release,
            fetch=self._fetch,
            receiver=self._receiver,
            links=self._links,
            store=self._store,
            rooms=self._rooms,
            directory=self._directory,
            clock=self._clock,
            rng=secrets.token_bytes,
            user=self.keyring.user_id,
            peer_id=self._host.peer_id,
            siblings=lambda: self._homes.sibling_peers,
            grace_ms=self.config.gap_grace_ms,
        )
        self._host.set_topic_validator(
            PRESENCE_TOPIC, self._standing.gossip_validator(self._presence.check)
        )
        self._topics = RoomTopics(
            host=self._host,
            receiver=self._receiver,
            clock=self._clock,
            user=self.keyring.user_id,
            members=self.members,
            rooms=self._rooms,
            emit=self._events.emit,
            supervisor=self._supervisor,
            standing=self._standing,
            running=lambda: self._started,
        )
        self._host.set_topic_validator(
            ROOM_TOPIC_PREFIX, self._standing.gossip_validator(self._topics.check)
        )
        presence_sub = await self._host.subscribe(PRESENCE_TOPIC)
        await self._stack.enter_async_context(self._supervisor)
        self._stack.push_async_callback(self._cancel_services)
        self._started = True
        for peer in self._host.connected_peers():  # connected while we started (mDNS, inbound)
            self._connection_changed(peer, True)
        self._self_room = self_room_id(self.keyring.user_id)
        await self._store.run(  # listed nowhere (not local), but synced like any room
            store.add_member,
            self._self_room,
            self.keyring.user_id,
            role=0,
            local=False,
            now_ms=self._clock.now_ms(),
        )
        rooms = await self._store.run(store.rooms_of, self.keyring.user_id)
        for room in rooms:
            if room != self._self_room:  # private state never goes on gossip
                await self._topics.watch(room)
        held_for = set(await self._store.run(store.relay_recipients))
        known = await self._store.run(_room_members, store, rooms)
        await self._store.run_long(self._directory.load, store, sorted(held_for | known))
        self._relay.hold(held_for)
        gossip_out = GossipPublisher(self._host)
        keep = self._supervisor.keep
        keep(gossip_out.run, "gossip-out")
        self._outgoing = Outgoing(
            keyring=self.keyring,
            hlc=self._hlc,
            clock=self._clock,
            store=self._store,
            rooms=self._rooms,
            outbox=self._outbox,
            gossip=gossip_out,
            siblings=lambda: self._homes.siblings,
            after_store=self._after_store,
        )
        keep(self._outbox.run, "outbox")
        keep(self._sync_siblings_periodically, "sync-siblings")
        keep(self._relay.run, "relay")
        keep(self._purge.run, "purge")
        keep(self.media.run, "media")
        keep(self._gaps.run, "gap-fetch")
        keep(functools.partial(self._presence.run, presence_sub), "presence")
        self._stack.push_async_callback(self._presence.stop)
        for address in self.config.bootstrap:  # in the background: start waits for no peer
            self._spawn(self._bootstrap(address), "bootstrap")
        log.info(
            "node up: peer %s, user %s, listening on %s",
            self.peer_id,
            self.keyring.user_id.hex()[:16],
            ", ".join(self._host.listen_addrs),
        )

    def _serve(self, protocol: str, handler: Callable[[FrameStream], Awaitable[None]]) -> None:
        """Serve `protocol` with `handler`, each stream contained by the supervisor: what a
        peer's stream makes it raise is charged to that peer and ends that stream alone."""
        self._host.set_stream_handler(protocol, self._supervisor.handler(protocol, handler))

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a one-shot reaction under the supervisor; `_cancel_services` cancels it."""
        self._supervisor.spawn(work, name)

    async def _cancel_services(self) -> None:
        self._started = False
        self._supervisor.cancel()
        await self._topics.close()

    async def _save_hlc(self) -> None:
        await self._store.run(
            self._store.store.set_setting, _HLC_SETTING, encode_timestamp(self._hlc.last)
        )

    async def stop(self) -> None:
        """Announce offline, stop services, the host and the store. Idempotent."""
        self._started = False
        self._events.close()
        await self._stack.aclose()

    # --- identity ---------------------------------------------------------------------------

    @property
    def user_id(self) -> UserId:
        return self.keyring.user_id

    @property
    def peer_id(self) -> str:
        return self._host.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return self._host.listen_addrs

    def _certificate_of(self, device: DeviceId) -> bytes | None:
        """The certificate proving whose `device` is: ours, or one a record or batch gave."""
        if device == self.keyring.device_id:
            return self.keyring.certificate_bytes
        return self._directory.certificate(device)

    def home_record(self) -> bytes:
        """Our user's signed home record: where to deliver, which devices are theirs."""
        return self._homes.record

    async def _add_home(
        self, peer_id: str, addrs: tuple[str, ...], device: DeviceId
    ) -> tuple[bytes, bytes]:
        """A new device was linked: list it, then tell the mesh (in the background)."""
        answer = await self._homes.add(peer_id, addrs, device)
        self._spawn(self._announce_home_record(), "announce-home")
        return answer

    def _addresses_changed(self) -> None:
        if self._started:  # at stop, the relays' connections close too: nothing to tell
            self._spawn(self._readdress(), "readdress")

    async def _readdress(self) -> None:
        """A relay reservation came or went (SPEC §10.7): re-issue and announce our record."""
        if await self._homes.readdress():
            await self._announce_home_record()

    async def _announce_home_record(self) -> None:
        await self.publish_home_record()
        await self._presence.announce()

    def devices(self) -> list[tuple[DeviceCertificate, str | None]]:
        """Our user's devices from the current home record, each with its home's peer id."""
        return self._homes.devices()

    async def revoke_device(self, device: DeviceId) -> None:
        """Drop a device and its home from our user's record (primary only).

        Senders stop delivering to its node, siblings stop forwarding to it, and what it still
        sends is deferred by every node that knows the new record (SPEC §22.4).
        """
        await self._homes.revoke(device)
        await self._announce_home_record()

    async def delete_conversation(self, room: RoomId) -> bool:
        """Take a conversation off our list on every device of our user (SPEC §22.6).

        History stays; a later event in the room lists it again. False if it was not listed.
        """
        removed = await self._store.run(self._store.store.delete_conversation, self.user_id, room)
        if removed:
            body = encode_conversation_deleted(room)
            await self._outgoing.send(
                self._self_room, body, PRIVATE_CONTENT_TYPE, Kind.PRIVATE, extra=set()
            )
        return removed

    async def history_digest(self, room: RoomId) -> tuple[bytes, int]:
        """(SHA-256 over the room's ordered event ids, how many): compare two devices."""
        return await self._store.read(_digest_room, self._store.store, room)

    def create_link_code(self, *, ttl_ms: int = 600_000) -> LinkCode:
        """A one-time pairing code for a new device of our user (primary only)."""
        if not self.keyring.is_primary:
            raise LocalProtocolError("only the primary device links new devices")
        return self._linking.offer(address=self._host.listen_addrs[0], ttl_ms=ttl_ms)

    async def learn_home_record(self, data: bytes) -> None:
        """Adopt another user's home record (a contact card). Raises RemoteProtocolError."""
        record = await self._store.run(
            self._directory.learn, self._store.store, data, now_ms=self._clock.now_ms()
        )
        if record is not None:
            await self._homes.consider(record, data)  # our own user's, newer: a change of devices
        self._relay.wake()

    # --- peers ------------------------------------------------------------------------------

    async def connect(self, address: str) -> str:
        """Dial a peer and swap home records with it; returns its peer id.

        Raises:
            NotAuthorized: the peer is banned here (SPEC §11.6).
            HearthError: the dial or the hello failed.
        """
        peer_id = await self._host.connect(address, retry_now=True)  # a deliberate dial
        if not self._standing.admits(peer_id):
            raise NotAuthorized(f"peer {peer_id} is banned for bad input")
        await self._greetings.wait(peer_id)
        await self.publish_home_record()
        if peer_id in self._homes.sibling_peers:  # another home of our user: repair what we missed
            self._spawn(self._sync_quietly(peer_id), "sync")
        return peer_id

    async def _bootstrap(self, address: str) -> None:
        """Dial a bootstrap peer and publish our record: never on the start path, so an
        unreachable peer or a slow DHT cannot hold the API back (SPEC §11.8.4)."""
        try:
            await self.connect(address)
        except HearthError as exc:
            log.warning("bootstrap peer %s unreachable: %s", address, exc)

    def _connection_changed(self, peer_id: str, connected: bool) -> None:
        """The host's report of a peer's first connection or last disconnection."""
        if not connected:
            self._greetings.forget(peer_id)
            self._standing.disconnected(peer_id)
        elif not self._standing.connected(peer_id, self._host.remote_ip(peer_id)):
            self._host.disconnect_nowait(peer_id)  # banned (itself or its prefix), or one too many
        elif self._started:
            self._greetings.start(peer_id)

    async def _meet(self, peer_id: str) -> None:
        """Once per connection (SPEC §13.3): hello, and what a new peer makes worth doing."""
        await self._hello.hello(peer_id)
        self._outbox.revive(peer_id)  # a home we were waiting for may have come back
        if not self._published and self._host.connected_peers() == [peer_id]:
            # Our first peer (mDNS, or one that dialled us): the DHT has a member now. Later and
            # spread out, so a burst of new peers does not become a burst of DHT puts.
            self._spawn(self._publish_after(_FIRST_PUBLISH_DELAY_S), "publish-home")

    async def _publish_after(self, delay_s: tuple[float, float]) -> None:
        await asyncio.sleep(secrets.SystemRandom().uniform(*delay_s))
        if not self._published:
            await self.publish_home_record()

    async def sync_with(self, peer_id: str) -> SyncReport:
        """Reconcile every room with one of our user's other homes (SPEC §23)."""
        return await self._sync.sync_with(peer_id)

    async def _sync_quietly(self, peer_id: str) -> None:
        try:
            await self._sync.sync_with(peer_id)
        except HearthError as exc:
            log.info("sync with %s failed: %s", peer_id[-8:], exc)

    async def _sync_siblings_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval_ms / 1000)
            for peer_id in self._homes.sibling_peers & set(self._host.connected_peers()):
                await self._sync_quietly(peer_id)

    async def publish_home_record(self) -> bool:
        """Put our home record in the DHT, so nodes that never met us can find our inbox."""
        try:
            await self._host.dht_put(home_record_key(self.user_id), self._homes.record)
        except HearthError as exc:  # no DHT peers yet: presence and hello still spread it
            log.info("home record not published to the DHT: %s", exc)
            return False
        self._published = True
        return True

    async def _refresh_home(self, user: UserId) -> None:
        await self._home_lookups.find(user)

    async def find_home(self, user: UserId) -> bool:
        """Look `user`'s home record up in the DHT and adopt it; True if one was found."""
        try:
            data = await self._host.dht_get(home_record_key(user))
            if data is None:
                return False
            await self.learn_home_record(data)
        except HearthError as exc:
            log.info("home of %s not found in the DHT: %s", user.hex()[:12], exc)
            return False
        return True

    async def relay_held(self, user: UserId) -> int:
        """How many envelopes this node holds as a relay for `user`."""
        usage = await self._store.read(self._store.store.relay_usage, user)
        return usage.count

    @property
    def delivery_round_trips_ms(self) -> list[float]:
        """Recent batch round trips (written to stored-ack verified), oldest first."""
        return list(self._links.round_trips_ms)

    @property
    def clock_offset_ms(self) -> int:
        """How far our home moved our clock (SPEC §24): 0 on a primary or a correct clock."""
        return self._clock.offset_ms

    def connected_peers(self) -> list[str]:
        return self._host.connected_peers()

    @property
    def reachability(self) -> str:
        """`public`, `private` or `unknown`: AutoNAT's verdict (SPEC §10.6)."""
        return str(self._host.reachability)

    def peer_paths(self) -> dict[str, list[str]]:
        """Connected peer -> `direct` and/or the relays we reach it through (SPEC §10.7)."""
        return self._host.peer_paths()

    def relays(self) -> list[str]:
        """Peer ids of the relays this node holds reservations on (SPEC §10.7)."""
        return self._host.relays()

    def home_peers(self, user: UserId) -> tuple[str, ...]:
        """Peer ids of `user`'s home nodes as this node knows them (hello, presence, DHT)."""
        return self._directory.homes(user)

    @property
    def supervision_faults(self) -> int:
        """Unexpected exceptions its services contained since start (SPEC §11.8)."""
        return self._supervisor.faults

    def is_banned(self, peer_id: str) -> bool:
        """True while `peer_id` is banned here for bad input (SPEC §11.6)."""
        return not self._standing.admits(peer_id)

    def peer_points(self, peer_id: str) -> int:
        """The points `peer_id` has for refused input, before forgiveness ends them (§11.6)."""
        return self._standing.points(peer_id)

    @property
    def prefix_bans(self) -> int:
        """Address prefixes banned since start (SPEC §11.6.5)."""
        return self._standing.prefix_bans

    def libp2p_inbound_streams(self, peer_id: str) -> int:
        """Inbound streams of a peer in all protocols, libp2p's own included (SPEC §10.4)."""
        return self._host.libp2p_inbound_streams(peer_id)

    @property
    def inbound(self) -> InboundLedger:
        """Inbound streams open and bytes held for partial frames (SPEC §10.4); read only."""
        return self._host.inbound

    @property
    def hellos_started(self) -> int:
        """Hellos this node opened: one per connection per peer (SPEC §13.3)."""
        return self._greetings.started

    def presence(self, user: UserId) -> Presence | None:
        """What we know of a user's presence (None: never heard of them)."""
        return self._directory.presence.get(user)

    # --- rooms ------------------------------------------------------------------------------

    async def open_direct(self, user: UserId) -> RoomId:
        """The direct room with `user`, created on first use."""
        if user == self.user_id:
            raise LocalProtocolError("a direct room needs another user")
        room = await self._store.run(
            self._rooms.open_direct,
            self._store.store,
            self.user_id,
            user,
            now_ms=self._clock.now_ms(),
        )
        await self._topics.watch(room)
        return room

    async def create_group(
        self, name: str, members: list[UserId], *, open_: bool = False
    ) -> RoomId:
        """Create a group with us as admin and add `members`; returns its room id."""
        nonce = secrets.token_bytes(16)
        room = group_room_id(self.user_id, nonce)
        create = MembershipChange(
            action=Action.CREATE,
            target=self.user_id,
            role=Role.ADMIN,
            nonce=nonce,
            open=open_,
            name=name,
        )
        await self._outgoing.change_membership(room, create)
        await self._topics.watch(room)
        for member in members:
            await self.add_member(room, member)
        return room

    async def add_member(self, room: RoomId, user: UserId) -> None:
        """Add `user` (we must be an admin); they receive the room's membership history."""
        change = MembershipChange(action=Action.ADD, target=user)
        await self._outgoing.change_membership(room, change, welcome=user)

    async def join(self, room: RoomId) -> None:
        """Join an open group whose membership events we hold."""
        await self._outgoing.change_membership(
            room, MembershipChange(action=Action.JOIN, target=self.user_id)
        )

    async def leave(self, room: RoomId) -> None:
        """Leave a group: members learn it, and we stop watching its topic."""
        await self._outgoing.change_membership(
            room, MembershipChange(action=Action.LEAVE, target=self.user_id)
        )
        await self._topics.unwatch(room)

    async def members(self, room: RoomId) -> set[UserId]:
        return await self._store.run(self._rooms.members, self._store.store, room)

    async def _co_members(self) -> set[UserId]:
        """Users who share a room with ours (contacts included): trusted relays' users."""
        return await self._store.read(_co_members, self._store.store, self.user_id)

    async def rooms(self) -> list[RoomId]:
        rooms = await self._store.run(self._store.store.rooms_of, self.user_id)
        return [room for room in rooms if room != self._self_room]  # private state, not a room

    async def room_state(self, room: RoomId) -> RoomState | None:
        """The folded state of a room (name, openness, members and roles); None if unknown.

        The returned object is the node's own: read it, never change it.
        """
        return await self._store.run(self._rooms.state, self._store.store, room)

    # --- messages ---------------------------------------------------------------------------

    async def send(
        self,
        room: RoomId,
        body: bytes,
        *,
        content_type: str = "text/plain",
        kind: Kind = Kind.MESSAGE,
        on_sealed: Callable[[Envelope], None] | None = None,
    ) -> Envelope:
        """Seal, store durably (history + outbox in one transaction), then fan out.

        Returns once the envelope is committed on this node: "sent" (DESIGN §5 step 2).
        `on_sealed(envelope)` runs before it is stored (an app may note its message id first).

        Raises:
            NotAuthorized: we are not a member of `room`.
        """
        if kind in (Kind.MEMBERSHIP, Kind.TYPING, Kind.PRESENCE, Kind.PRIVATE):
            raise LocalProtocolError(f"{kind.name} is not sent with send()")
        return await self._outgoing.send(
            room, body, content_type, kind, extra=set(), on_sealed=on_sealed
        )

    async def history(
        self,
        room: RoomId,
        *,
        limit: int = 50,
        cursor: bytes | None = None,
        direction: Direction = Direction.BACKWARD,
    ) -> HistoryPage:
        """A page of a room's history (oldest first within the page)."""
        return await self._store.read(
            self._store.store.page_history,
            room,
            cursor=None if cursor is None else Cursor(cursor),
            direction=direction,
            limit=limit,
        )

    async def get_event(self, message_id: MessageId) -> Envelope | None:
        stored = await self._store.read_inline(self._store.store.get_event, message_id)
        return None if stored is None else stored.envelope

    def events(self) -> AsyncIterator[NodeEvent]:
        """Subscribe to this node's events from now on (bounded: see EventHub)."""
        return self._events.subscribe()

    @property
    def outbox_delivered(self) -> int:
        return self._outbox.delivered

    def unreachable(self) -> tuple[list[UserId], list[str]]:
        """(users, our own homes' peer ids) whose deliveries wait parked: no home answers."""
        users: list[UserId] = []
        homes: list[str] = []
        for destination in self._outbox.unreachable:
            peer = destination_peer(destination)
            if peer is None:
                users.append(UserId(destination))
            else:
                homes.append(peer)
        return users, homes

    @property
    def store(self) -> AsyncStore:
        """The node's store, for the client API: call its methods through `store.run`."""
        return self._store

    async def send_typing(self, room: RoomId, active: bool) -> None:
        """Tell the room's members we are (or stopped) typing: gossip only, never stored.

        Raises:
            NotAuthorized: we are not a member of `room`.
        """
        await self._outgoing.typing(room, active)

    def _after_store(self, outcome: StoreOutcome) -> None:
        if not self._started:
            return  # stopping: the services that would act on it are gone
        if outcome.relayed_for:
            self._relay.hold(outcome.relayed_for)
        for user in outcome.unknown_devices:  # one lookup at a time per user (SPEC §13.5)
            self._spawn(self._refresh_home(user), "refresh-home")
        if outcome.released and self._homes.siblings:
            self._outbox.wake()  # stored with entries for our other homes
        self.media.want(outcome.released)
        for room in outcome.membership_changed:
            self._outgoing.forget_members(RoomId(room))
            self._spawn(self._membership_changed(RoomId(room)), "membership")

    async def _membership_changed(self, room: RoomId) -> None:
        try:
            members = await self.members(room)
            if self.user_id in members:
                await self._topics.watch(room)
        except HearthError as exc:  # a background reaction must never take the node down
            log.warning("membership change of room %s not applied: %s", room.hex()[:12], exc)
            return
        self._events.emit(MembershipChanged(room=room, members=frozenset(members)))


def _gossip_message_id(data: bytes) -> bytes:
    """Gossip dedupes by our message id, so one envelope is one gossip message everywhere."""
    value = decode_canonical(data, max_bytes=1 << 20)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], bytes):
        return load_envelope(value[1]).message_id
    raise RemoteProtocolError("not a gossip payload")


def _co_members(store: Store, user: UserId) -> set[UserId]:
    return _room_members(store, store.rooms_of(user))


def _room_members(store: Store, rooms: list[RoomId]) -> set[UserId]:
    """Everyone we share a room with: their home records are loaded at start."""
    return {member.user for room in rooms for member in store.members(room)}


def _digest_room(store: Store, room: RoomId) -> tuple[bytes, int]:
    running = HistoryDigest()
    cursor = None
    while True:
        page = store.page_history(room, cursor=cursor, direction=Direction.FORWARD, limit=1000)
        for event in page.events:
            running.update(event.envelope.message_id)
        if page.next is None:
            return running.digest(), running.count
        cursor = page.next


def _restored_hlc(store: Store, user: UserId) -> Timestamp:
    """Where our HLC stood: saved at the last clean stop, or the latest activity stored.

    An HLC that restarted from zero under a clock that went back would stamp new events
    before our earlier ones (SPEC §4.2.3).
    """
    saved = store.get_setting(_HLC_SETTING)
    last = decode_timestamp(saved) if saved is not None else ZERO
    newest = store.conversations(user, page_size=1).items
    return max(last, newest[0].latest_activity) if newest else last
