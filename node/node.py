"""`Node`: one home node and relay, embeddable as `async with Node(config) as node:`.

The facade of node/ (ARCHITECTURE §6): it owns the lifetime and offers the embedding API. Start
opens the store, loads or creates the keys, restores the HLC, starts the libp2p host, has
`wiring.build_services` build the services and `wiring.serve` serve their protocols, and runs
them under the supervisor. Stopping announces offline, cancels the services, stops the host and
closes the store, in that order. The API (rooms, sending, history, events, peers, devices)
delegates to the services.

Fail-stop (SPEC §11.8.5, ARCHITECTURE §6): when the libp2p run ends unasked or a service hits a
fatal `StorageError`, the node logs one ERROR with the cause, marks itself failed (`failure`,
`wait_failed`), refuses sends with `NodeFailed`, and stops as `stop` does (the store closes:
everything acked is on disk). The app decides whether to start a new node (`hearthmesh run`
does, `tools/home.py`).

State: the lifetime (the exit stack, the store, the host, the fail-stop watcher), the clock and
HLC, the event hub, the supervisor and the run state; every service owns its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Self

from hearthmesh.node.clock import Clock, CorrectedClock, HybridClock, SystemClock
from hearthmesh.node.config import NodeConfig
from hearthmesh.node.delivery.outgoing import WrittenTimes
from hearthmesh.node.delivery.seal_order import SealTurn
from hearthmesh.node.delivery.sync import SyncReport
from hearthmesh.node.e2ee.key_ahead import KeyAhead
from hearthmesh.node.events import NodeEvent
from hearthmesh.node.identity.home_directory import Presence
from hearthmesh.node.identity.keyring import Keyring, load_or_create_keyring
from hearthmesh.node.mesh.kept_peers import KeptPeers
from hearthmesh.node.p2p.dht import home_record_rules
from hearthmesh.node.p2p.hole_punch import HolePunchCounts
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.node.p2p.webrtc import RETRY_AFTER_S
from hearthmesh.node.rooms.groups import GroupService
from hearthmesh.node.rooms.members import room_members
from hearthmesh.node.run_state import RunState
from hearthmesh.node.subscribers import EventHub
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.node.wiring import announce_addrs, build_services, serve
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.destinations import destination_peer
from hearthmesh.protocol.digest import HistoryDigest
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    NodeFailed,
    NotAuthorized,
    store_failed,
)
from hearthmesh.protocol.gossip import PRESENCE_TOPIC, gossip_message_id
from hearthmesh.protocol.hlc import ZERO, Timestamp, decode_timestamp, encode_timestamp
from hearthmesh.protocol.identity import DeviceCertificate, DeviceId, UserId, user_id_text
from hearthmesh.protocol.inbound import InboundLedger
from hearthmesh.protocol.linking import LinkCode
from hearthmesh.protocol.membership import MAX_ADD_TARGETS, Action, MembershipChange, RoomState
from hearthmesh.protocol.private import (
    PRIVATE_CONTENT_TYPE,
    encode_conversation_deleted,
    encode_message_hidden,
    self_room_id,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.storage.api import Cursor, Direction, HistoryPage, OnStored, Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

__all__ = ["Node"]

_HLC_SETTING: Final = "hlc.last"

BOOTSTRAP_FIRST_RETRY_MS: Final = 250
"""First wait before a bootstrap peer that did not answer is dialled again (doubling)."""

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
        self._run_state = RunState()
        self._closing = asyncio.Lock()
        """Held while the exit stack unwinds: `stop` and the fail-stop close it once, in order."""
        self._lifetime: asyncio.TaskGroup | None = None
        self._fail_stop_task: asyncio.Task[None] | None = None

    # --- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open everything; on failure, close what was opened and re-raise."""
        self._lifetime = asyncio.TaskGroup()
        await self._lifetime.__aenter__()
        try:
            await self._start()
        except BaseException:
            self._run_state.stopping()
            try:
                await self._close()
            finally:
                await self._end_lifetime()
            raise

    async def _start(self) -> None:
        data_dir = Path(self.config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # noqa: ASYNC240 - once, at start
        store = self._sync_store or LmdbStore(
            data_dir / "store", relay_quota=self.config.relay_quota
        )
        self._store = await self._stack.enter_async_context(
            AsyncStore(store, behind_ms=self.config.receipt_wait_ms)
        )
        self.keyring: Keyring = await self._store.run(
            load_or_create_keyring, store, now_ms=self._clock.now_ms, rng=secrets.token_bytes
        )
        self._hlc.restore(await self._store.run(_restored_hlc, store, self.keyring.user_id))
        self._stack.push_async_callback(self._save_hlc)
        dht_validate, dht_select = home_record_rules(self._clock.now_ms)
        retry_ms = self.config.webrtc_retry_after_ms
        retry_s = RETRY_AFTER_S if retry_ms is None else tuple(ms / 1000 for ms in retry_ms)
        self._host = host = await self._stack.enter_async_context(
            P2PHost(
                HostConfig(
                    identity_seed=self.keyring.node.seed,
                    listen_addrs=list(self.config.listen_addrs),
                    enable_mdns=self.config.enable_mdns,
                    message_id=gossip_message_id,
                    dht_validate=dht_validate,
                    dht_select=dht_select,
                    inbound=self.config.inbound,
                    announce_addrs=list(self.config.announce_addrs),
                    autonat_confirmations=self.config.autonat_confirmations,
                    autonat_loopback=self.config.autonat_loopback,
                    relay_service=self.config.relay_service,
                    relay_limits=self.config.relay_limits,
                    relay_reservations=self.config.relay_reservations,
                    webrtc=self.config.webrtc,
                    stun_servers=list(self.config.stun_servers),
                    unilateral_dial_s=self.config.unilateral_dial_ms / 1000,
                    webrtc_retry_after_s=retry_s,
                    webrtc_upgrade_timeout_s=self.config.webrtc_upgrade_timeout_ms / 1000,
                    live_ping_s=self.config.live_ping_ms / 1000,
                    dial_retry_delay_s=self.config.dial_retry_delay_ms / 1000,
                    upnp=self.config.upnp,
                    relay_rank=self._rank_relays,
                    trio_on_loop=self.config.trio_on_loop,
                    clock=self._clock,
                    connection_trim=self.config.connection_trim,
                )
            )
        )
        self._services = s = build_services(
            config=self.config,
            keyring=self.keyring,
            store=self._store,
            host=host,
            clock=self._clock,
            hlc=self._hlc,
            events=self._events,
            supervisor=self._supervisor,
            run_state=self._run_state,
        )
        self.media = s.media
        """Fetches the media that stored messages reference (SPEC §25); the API waits on it."""
        self.verification = s.verification
        """SAS verification flows and trust (SPEC §29); the API drives it."""
        self.social = s.social
        """Our user's profile, blocks, presence visibility and message requests (SPEC §32)."""
        self._stack.push_async_callback(s.links.aclose)
        host.set_peer_filter(s.standing.admits)
        host.set_protected(s.homes.is_sibling)  # reads a set replaced whole: safe off asyncio
        host.set_refusal_handler(s.standing.refused)  # a stream's outcome
        self._supervisor.set_charge(s.standing.refused_item)  # one contained item
        host.set_connection_handler(self._connection_changed)
        await self._store.run(s.homes.load, store)
        await self._store.run(s.privacy.load, store)  # before anything arrives (SPEC §32.3)
        host.set_address_handler(s.records.addresses_changed)
        serve(s, host=host, supervisor=self._supervisor)
        presence_sub = await host.subscribe(PRESENCE_TOPIC)
        await self._stack.enter_async_context(self._supervisor)
        self._stack.push_async_callback(self._cancel_services)
        self._supervisor.spawn(self._watch_host(), "host-watch")
        assert self._lifetime is not None
        self._fail_stop_task = self._lifetime.create_task(self._fail_stop(), name="fail-stop")
        self._run_state.started()
        for peer in host.connected_peers():  # connected while we started (mDNS, inbound)
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
                await s.topics.watch(room)
        held_for = set(await self._store.run(store.relay_recipients))
        known = await self._store.run(room_members, store, rooms)
        await self._store.run_long(s.directory.load, store, sorted(held_for | known))
        s.relay.hold(held_for)
        keep = self._supervisor.keep
        keep(s.gossip_out.run, "gossip-out")
        keep(s.outbox.run, "outbox")
        keep(self._sync_siblings_periodically, "sync-siblings")
        keep(s.relay.run, "relay")
        keep(s.purge.run, "purge")
        kept = KeptPeers(members=s.members, directory=s.directory, homes=s.homes, host=host)
        keep(kept.run, "kept-peers")  # the connection manager's to keep (SPEC §10.17)
        keep(s.media.run, "media")
        keep(s.verification.run, "verification")
        keep(s.key_forwarding.run, "key-forwarding")
        keep(s.key_requests.run, "key-requests")
        keep(s.gaps.run, "gap-fetch")
        keep(functools.partial(s.presence.run, presence_sub), "presence")
        self._stack.push_async_callback(s.presence.stop)
        s.records.give_bundle_soon()  # a linked device's Olm keys, to its primary's record
        for address in self.config.bootstrap:  # in the background: start waits for no peer
            self._supervisor.spawn(self._bootstrap(address), "bootstrap")
        log.info(
            "node up: peer %s, user %s, listening on %s",
            self.peer_id,
            self.keyring.user_id.hex()[:16],
            ", ".join(host.listen_addrs),
        )

    async def _rank_relays(self, _connected: list[str]) -> list[str]:
        """Candidate relays for the host, best first: co-members' homes first, then peers of
        good standing (SPEC §11.7). None before the services run: the host keeps its order."""
        if not self._run_state.running():
            return []
        return await self._services.relays.choose(())

    async def _cancel_services(self) -> None:
        self._run_state.stopping()
        self._supervisor.cancel()
        await self._services.topics.close()

    async def _save_hlc(self) -> None:
        await self._store.run(
            self._store.store.set_setting, _HLC_SETTING, encode_timestamp(self._hlc.last)
        )

    async def stop(self) -> None:
        """Announce offline, stop services, the host and the store. Idempotent; after a
        fault, it waits for the fail-stop to end."""
        self._run_state.stopping()
        self._events.close()
        try:
            await self._close()
        finally:
            await self._end_lifetime()

    async def _close(self) -> None:
        async with self._closing:
            await self._stack.aclose()

    async def _end_lifetime(self) -> None:
        lifetime, self._lifetime = self._lifetime, None
        if self._fail_stop_task is not None:
            self._fail_stop_task.cancel()  # done already if the node failed: `_close` waited
        if lifetime is not None:
            await lifetime.__aexit__(None, None, None)

    async def _watch_host(self) -> None:
        """A supervised watch: the libp2p run that ends unasked is the node's fatal fault."""
        lost = await self._host.wait_failed()
        raise NodeFailed(str(lost)) from lost

    async def _fail_stop(self) -> None:
        """SPEC §11.8.5: on the first fatal fault, say so once, mark the node failed and stop
        what still stops (services, host, store; everything acked is on disk by then)."""
        fault = await self._supervisor.wait_fatal()
        if not self._run_state.running():  # `stop` began first: it closes all
            log.warning("node %s hit a fault while stopping: %s", self.peer_id, fault)
            return
        if isinstance(fault, NodeFailed):
            failure = fault
        else:
            failure = NodeFailed(f"its store failed: {fault}")
            failure.__cause__ = fault
        self._run_state.failed(failure)
        log.error(
            "node %s failed: %s; it delivers nothing until it is started again: stopping it",
            self.peer_id,
            failure,
            exc_info=failure,
        )
        self._events.close()
        try:
            await self._close()
        except Exception as exc:  # the rest of the stack closed: only this part failed
            log.warning("stopping the failed node %s: %r", self.peer_id, exc)

    @property
    def failure(self) -> NodeFailed | None:
        """Why the node failed and stopped itself (SPEC §11.8.5); None while it runs."""
        return self._run_state.failure

    async def wait_failed(self) -> NodeFailed:
        """Wait until the node fails (it is stopping itself by then); its failure."""
        return await self._run_state.wait_failed()

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

    def home_record(self) -> bytes:
        """Our user's signed home record: where to deliver, which devices are theirs."""
        return self._services.homes.signed_record()

    def devices(self) -> list[tuple[DeviceCertificate, str | None]]:
        """Our user's devices from the current home record, each with its home's peer id."""
        return self._services.homes.devices()

    async def revoke_device(self, device: DeviceId) -> None:
        """Drop a device and its home from our user's record (primary only).

        Senders stop delivering to its node, siblings stop forwarding to it, and what it still
        sends is deferred by every node that knows the new record (SPEC §22.4).
        """
        await self._services.homes.revoke(device)
        await self._services.records.announce()

    async def delete_conversation(self, room: RoomId) -> bool:
        """Take a conversation off our list on every device of our user (SPEC §22.6).

        History stays; a later event in the room lists it again. False if it was not listed.
        """
        removed = await self._store.run(self._store.store.delete_conversation, self.user_id, room)
        if removed:
            body = encode_conversation_deleted(room)
            await self._services.outgoing.send(
                self._self_room, body, PRIVATE_CONTENT_TYPE, Kind.PRIVATE
            )
        return removed

    async def delete_for_me(self, room: RoomId, message: MessageId) -> bool:
        """Hide a message on every device of our user, not from anyone else (SPEC §31.7).

        False if it was hidden already."""
        hidden = await self._store.run(self._store.store.hide_message, self.user_id, message)
        if hidden:
            body = encode_message_hidden(room, message)
            await self._services.outgoing.send(
                self._self_room, body, PRIVATE_CONTENT_TYPE, Kind.PRIVATE
            )
        return hidden

    async def history_digest(self, room: RoomId) -> tuple[bytes, int]:
        """(SHA-256 over the room's ordered event ids, how many): compare two devices."""
        return await self._store.read(_digest_room, self._store.store, room)

    def create_link_code(self, *, ttl_ms: int = 600_000) -> LinkCode:
        """A one-time pairing code for a new device of our user (primary only), naming the
        address we announce (SPEC §22.1)."""
        if not self.keyring.is_primary:
            raise LocalProtocolError("only the primary device links new devices")
        address = announce_addrs(self.config, self._host)[0]
        return self._services.linking.offer(address=address, ttl_ms=ttl_ms)

    async def learn_home_record(self, data: bytes) -> None:
        """Adopt another user's home record (a contact card). Raises RemoteProtocolError."""
        await self._services.records.learn(data)

    # --- peers ------------------------------------------------------------------------------

    async def connect(self, address: str) -> str:
        """Dial a peer and swap home records with it; returns its peer id.

        Raises:
            NotAuthorized: the peer is banned here (SPEC §11.6).
            HearthError: the dial or the hello failed.
        """
        peer_id = await self._host.connect(address, retry_now=True)  # a deliberate dial
        if not self._services.standing.admits(peer_id):
            raise NotAuthorized(f"peer {peer_id} is banned for bad input")
        await self._services.greetings.wait(peer_id)
        self._services.records.publish_soon()  # the DHT put may take seconds: not awaited
        if self._services.homes.is_sibling(
            peer_id
        ):  # another home of our user: repair what we missed
            self._supervisor.spawn(self._sync_quietly(peer_id), "sync")
        return peer_id

    async def _bootstrap(self, address: str) -> None:
        """Dial a bootstrap peer until it answers, then publish our record (in `connect`):
        never on the start path, so an unreachable peer or a slow DHT cannot hold the API back
        (SPEC §11.8.4). Retries back off from BOOTSTRAP_FIRST_RETRY_MS to
        `config.bootstrap_retry_max_ms`; a peer that bans us is not dialled again."""
        delay_ms = BOOTSTRAP_FIRST_RETRY_MS
        for attempt in itertools.count(1):
            try:
                peer_id = await self.connect(address)
            except NotAuthorized as exc:
                log.warning("bootstrap peer %s refused: %s", address, exc)
                return
            except HearthError as exc:
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.warning(
                    "bootstrap peer %s unreachable (attempt %d, next in %d ms): %s",
                    address,
                    attempt,
                    delay_ms,
                    exc,
                )
                await asyncio.sleep(delay_ms / 1000)
                delay_ms = min(delay_ms * 2, self.config.bootstrap_retry_max_ms)
                continue
            log.info("bootstrap peer %s connected (attempt %d)", peer_id[-8:], attempt)
            return

    def _connection_changed(self, peer_id: str, connected: bool) -> None:
        """The host's report of a peer's first connection or last disconnection."""
        levels = self._services.peer_levels
        if not connected:
            self._services.greetings.forget(peer_id)
            self._services.standing.disconnected(peer_id)
            levels.disconnected(peer_id)
            return
        if not self._services.standing.connected(peer_id, self._host.remote_ip(peer_id)):
            self._host.disconnect_nowait(peer_id)  # banned (itself or its prefix), or one too many
        elif self._run_state.running():
            # What it told before stands until this connection's hello replaces it (a peer
            # that upgraded or went back restarted, so it connects anew); a send meanwhile
            # waits for the hello only if it never told any (SPEC §20.7.1).
            levels.connected(peer_id)
            self._services.greetings.start(peer_id)

    async def sync_with(self, peer_id: str) -> SyncReport:
        """Reconcile every room with one of our user's other homes (SPEC §23)."""
        return await self._services.sync.sync_with(peer_id)

    async def _sync_quietly(self, peer_id: str) -> None:
        try:
            await self._services.sync.sync_with(peer_id)
        except HearthError as exc:
            if store_failed(exc):
                raise
            log.info("sync with %s failed: %s", peer_id[-8:], exc)

    async def _sync_siblings_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval_ms / 1000)
            for peer_id in self._services.homes.sibling_peers() & set(self._host.connected_peers()):
                await self._sync_quietly(peer_id)

    async def publish_home_record(self) -> bool:
        """Put our home record in the DHT, so nodes that never met us can find our inbox."""
        return await self._services.records.publish()

    async def home_record_published(self) -> None:
        """Returns once our home record went into the DHT (bound it with a timeout)."""
        await self._services.records.published_once.wait()

    async def find_home(self, user: UserId) -> bool:
        """Look `user`'s home record up in the DHT and adopt it; True if one was found."""
        return await self._services.records.find(user)

    async def relay_held(self, user: UserId) -> int:
        """How many envelopes this node holds as a relay for `user`."""
        usage = await self._store.read(self._store.store.relay_usage, user)
        return usage.count

    @property
    def delivery_round_trips_ms(self) -> list[float]:
        """Recent batch round trips (written to stored-ack verified), oldest first."""
        return list(self._services.links.round_trips_ms)

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

    def hole_punches(self) -> HolePunchCounts:
        """Hole punches tried and those that went direct, per transport (SPEC §10.9)."""
        return self._host.hole_punches

    def connections_closed(self) -> dict[str, int]:
        """Connections closed since the start, per reason: ours or the peer's (SPEC §10.13)."""
        return dict(self._host.connections_closed)

    def wire(self) -> dict[str, Any]:
        """Bytes and writes to peers per protocol, and gossip RPCs dropped (SPEC §20.6)."""
        return self._host.wire()

    def home_peers(self, user: UserId) -> tuple[str, ...]:
        """Peer ids of `user`'s home nodes as this node knows them (hello, presence, DHT)."""
        return self._services.directory.homes(user)

    def home_addresses(self, user: UserId) -> tuple[str, ...]:
        """The addresses `user`'s home record gives, as this node knows it (SPEC §13)."""
        return self._services.directory.addresses(user)

    @property
    def key_forwarding_taken(self) -> int:
        """Room keys our sibling homes forwarded to this device (SPEC §27.12)."""
        return self._services.key_forwarding.keys_taken

    @property
    def key_requests_taken(self) -> int:
        """Room keys senders gave this device on request (SPEC §27.13)."""
        return self._services.key_requests.keys_taken

    @property
    def key_ahead(self) -> KeyAhead:
        """Our rooms' keys shared ahead of our next send: when, and how many (SPEC §27.10.3)."""
        return self._services.key_ahead

    @property
    def key_requests_answered(self) -> int:
        """Key requests this node answered with at least one key (SPEC §27.13)."""
        return self._services.key_request_server.answered

    @property
    def home_lookups(self) -> int:
        """DHT lookups of other users' home records this node walked (SPEC §13.5)."""
        return self._services.home_lookups.asked

    @property
    def deferred_due_again(self) -> int:
        """Rows a home deferred that came due again once it stored a later batch of ours
        (`DeferredRows`, SPEC §11.5.1)."""
        return self._services.outbox.deferred_due_again

    def capability_asks(self) -> dict[str, int]:
        """What learning peers' levels cost (SPEC §20.7.1): caps streams asked, asks that got no
        answer in time, and sends that waited for a hello on its way instead."""
        levels = self._services.peer_levels
        return {"asked": levels.asked, "unanswered": levels.unanswered, "hellos": levels.hellos}

    def slow_arrivals(self) -> list[dict[str, Any]]:
        """The latest messages released to our app late, each with what brought it (SPEC
        §20.6): the last member's side of a slow message."""
        return [
            {"message_id": a.message_id.hex(), "route": a.route, "late_ms": a.late_ms}
            for a in self._services.receiver.slow.latest
        ]

    def outages_ended(self) -> list[dict[str, Any]]:
        """The latest recipients that were down and acked again (SPEC §20.6): the sender's side
        of a slow message (its copy waited parked, or as a marker while no record was known)."""
        return [
            {
                "user": user_id_text(o.user),
                "since_ms": o.since_ms,
                "ended_ms": o.ended_ms,
                "absent": o.absent,
            }
            for o in self._services.outbox.outages_ended
        ]

    @property
    def undecryptable(self) -> int:
        """Held envelopes whose key was asked for `KEY_REQUEST_ATTEMPTS` times in vain
        (SPEC §27.13.3)."""
        return self._services.key_requests.undecryptable

    @property
    def supervision_faults(self) -> int:
        """Unexpected exceptions its services contained since start (SPEC §11.8)."""
        return self._supervisor.faults

    @property
    def unreadable_items(self) -> int:
        """Times one unreadable stored item was met and contained (SPEC §11.8.7)."""
        return self._supervisor.unreadable_items

    def report_fault(self, where: str, exc: HearthError) -> None:
        """An error that `where` (the API) met and answered itself: a store that failed makes
        the node fail-stop (SPEC §11.8.5), one unreadable item is counted and logged once
        (§11.8.7); any other error is the caller's alone."""
        self._supervisor.report(where, exc)

    def is_banned(self, peer_id: str) -> bool:
        """True while `peer_id` is banned here for bad input (SPEC §11.6)."""
        return not self._services.standing.admits(peer_id)

    def peer_points(self, peer_id: str) -> int:
        """The points `peer_id` has for refused input, before forgiveness ends them (§11.6)."""
        return self._services.standing.points(peer_id)

    def charged_by_protocol(self) -> dict[str, int]:
        """Charges that cost a peer points since start, by the protocol they came on (§11.6.7)."""
        return dict(self._services.standing.charged_by_protocol)

    @property
    def bans(self) -> int:
        """Peers banned since start (SPEC §11.6.2)."""
        return self._services.standing.bans

    @property
    def prefix_bans(self) -> int:
        """Address prefixes banned since start (SPEC §11.6.5)."""
        return self._services.standing.prefix_bans

    @property
    def refused_before_handshake(self) -> int:
        """Connections from banned prefixes refused before their handshake (SPEC §11.6.5)."""
        return self._host.refused_before_handshake

    def libp2p_inbound_streams(self, peer_id: str) -> int:
        """Inbound streams of a peer in all protocols, libp2p's own included (SPEC §10.4)."""
        return self._host.libp2p_inbound_streams(peer_id)

    @property
    def inbound(self) -> InboundLedger:
        """Inbound streams open and bytes held for partial frames (SPEC §10.4); read only."""
        return self._host.inbound

    @property
    def hellos_started(self) -> int:
        """Hellos this node opened: one per connection per peer (SPEC §13.3), not counting
        the retries of one that failed."""
        return self._services.greetings.started

    def presence(self, user: UserId) -> Presence | None:
        """What we know of a user's presence (None: never heard of them)."""
        return self._services.directory.presence.get(user)

    # --- rooms ------------------------------------------------------------------------------

    async def open_direct(self, user: UserId) -> RoomId:
        """The direct room with `user`, created on first use."""
        if user == self.user_id:
            raise LocalProtocolError("a direct room needs another user")
        room = await self._store.run(
            self._services.rooms.open_direct,
            self._store.store,
            self.user_id,
            user,
            now_ms=self._clock.now_ms(),
        )
        await self._services.topics.watch(room)
        return room

    async def create_group(
        self, name: str, members: list[UserId], *, open_: bool = False
    ) -> RoomId:
        """Create a group with us as its owner and add `members`; returns its room id once
        they are added (our profile follows them aside)."""
        nonce = secrets.token_bytes(16)
        room = group_room_id(self.user_id, nonce)
        create = MembershipChange(
            action=Action.CREATE,
            target=self.user_id,
            nonce=nonce,
            open=open_,
            name=name,
        )
        await self._services.outgoing.change_membership(room, create)
        await self._services.topics.watch(room)
        await self.add_members(room, members)
        # Co-members see our profile (SPEC §32.1), sent aside: its room key's first shares
        # wait on every member's home (record lookups, key claims), 17 s of a 50-node group's
        # create at load 50, and the group is whole without it (SPEC §20.6).
        self._supervisor.spawn(self.social.share_with(room), "share-profile")
        return room

    async def add_member(self, room: RoomId, user: UserId) -> None:
        """Add `user` (we must be an admin); they receive the room's membership history."""
        await self.add_members(room, [user])

    async def add_members(self, room: RoomId, users: list[UserId]) -> None:
        """Add `users` (we must be an admin), up to MAX_ADD_TARGETS per MEMBERSHIP event (SPEC
        §12.1.1), or one per event while a home of the room's members or of `users` has not
        advertised `add-several` (SPEC §20.7); each receives the room's membership history. A
        refused event raises and leaves the events before it standing; one user per event is
        first checked as the several-user ADD it stands for, so a refusal (a user already a
        member, say) adds none of them, as that ADD would."""
        audience = await self._services.members.of(room) | set(users)
        several = await self._services.revisions.speak(audience, Level.ADD_SEVERAL)
        outgoing = self._services.outgoing
        for start in range(0, len(users), MAX_ADD_TARGETS):
            first, *more = users[start : start + MAX_ADD_TARGETS]
            change = MembershipChange(action=Action.ADD, target=first, more=tuple(more))
            if several:
                await outgoing.change_membership(room, change, welcome=change.targets)
                continue
            await outgoing.check_membership(room, change)
            for user in change.targets:
                one = MembershipChange(action=Action.ADD, target=user)
                await outgoing.change_membership(room, one, welcome=one.targets)

    async def join(self, room: RoomId) -> None:
        """Join an open group whose membership events we hold."""
        await self._services.outgoing.change_membership(
            room, MembershipChange(action=Action.JOIN, target=self.user_id)
        )
        await self.social.share_with(room)  # co-members see our profile (SPEC §32.1)

    async def leave(self, room: RoomId) -> None:
        """Leave a group: members learn it, its conversation leaves our list on every device
        of our user (SPEC §15.7.4; the store keeps a kicked member's), and we stop watching
        its topic."""
        await self._services.outgoing.change_membership(
            room, MembershipChange(action=Action.LEAVE, target=self.user_id)
        )
        await self.delete_conversation(room)
        await self._services.topics.unwatch(room)

    async def members(self, room: RoomId) -> set[UserId]:
        return set(await self._services.members.of(room))

    @property
    def groups(self) -> GroupService:
        """Running groups (kick, ban, roles, name, topic, avatar) and invites (SPEC §30)."""
        return self._services.groups

    async def rooms(self) -> list[RoomId]:
        rooms = await self._store.run(self._store.store.rooms_of, self.user_id)
        return [room for room in rooms if room != self._self_room]  # private state, not a room

    async def room_state(self, room: RoomId) -> RoomState | None:
        """The folded state of a room (name, openness, members and roles); None if unknown.

        The returned object is the node's own: read it, never change it.
        """
        return await self._store.run(self._services.rooms.state, self._store.store, room)

    # --- messages ---------------------------------------------------------------------------

    async def send(
        self,
        room: RoomId,
        body: bytes,
        *,
        content_type: str = "text/plain",
        kind: Kind = Kind.MESSAGE,
        on_sealed: Callable[[Envelope], None] | None = None,
        on_stored: OnStored | None = None,
        written: WrittenTimes | None = None,
        acts_on: MessageId | None = None,
        to: frozenset[UserId] | None = None,
        turn: SealTurn | None = None,
    ) -> Envelope:
        """Seal, store durably (history + outbox in one transaction), then fan out.

        Returns once the envelope is committed on this node: "sent" (ARCHITECTURE §3 step 2).
        `on_sealed(envelope)` runs before it is stored (an app may note its message id first),
        `on_stored(entries)` once committed, with the arrival-log entries the commit gave it
        and the ROOM_KEY envelopes before it (an app may show it without reading it back).
        `written` stamps a message a client wrote earlier where it was written (SPEC §31.6);
        `acts_on` names the message an EDIT, RECALL or REACTION acts on (SPEC §31.5); `to`
        names the users whose homes a RECEIPT goes to (SPEC §16.2.3). Our sends of a room seal
        in the order of the calls, or of their `turn`s (`take_turn`, taken when a client's send
        was accepted, held by the caller and released here once sealed); a RECEIPT seals as soon
        as it is ready, behind none of them (SPEC §15.4.5).

        Raises:
            NotAuthorized: we are not a member of `room`.
            NodeFailed: the node failed (SPEC §11.8.5): nothing was stored.
        """
        if kind in (Kind.MEMBERSHIP, Kind.TYPING, Kind.PRESENCE, Kind.PRIVATE):
            raise LocalProtocolError(f"{kind.name} is not sent with send()")
        self._refuse_if_failed()
        sealed = await self._services.outgoing.seal(
            room, body, content_type, kind, written=written, acts_on=acts_on, to=to, turn=turn
        )
        if on_sealed is not None:
            on_sealed(sealed.envelope)
        return await self._services.outgoing.commit(sealed, on_stored)

    def _refuse_if_failed(self) -> None:
        """A failed node acks nothing: it could not deliver it (SPEC §11.8.5)."""
        failure = self._run_state.failure
        if failure is not None:
            raise NodeFailed(f"the node failed ({failure}); send again once it restarted")

    def take_turn(self, room: RoomId) -> SealTurn:
        """A client's send's place among our sends of `room`, taken without awaiting as it is
        accepted; hold it in a `with` block around `send(turn=...)`, which releases it once
        sealed (the block's exit does if the send fails or is cancelled before)."""
        return self._services.outgoing.take_turn(room)

    async def history(
        self,
        room: RoomId,
        *,
        limit: int = 50,
        cursor: bytes | None = None,
        direction: Direction = Direction.BACKWARD,
    ) -> HistoryPage:
        """A page of a room's history (oldest first within the page), without the ROOM_KEY
        envelopes that carry its keys between devices (SPEC §27.5): a page may hold fewer than
        `limit` events and still have a `next` cursor."""
        page = await self._store.read(
            self._store.store.page_history,
            room,
            cursor=None if cursor is None else Cursor(cursor),
            direction=direction,
            limit=limit,
        )
        shown = tuple(e for e in page.events if e.envelope.kind is not Kind.ROOM_KEY)
        return page if len(shown) == len(page.events) else replace(page, events=shown)

    async def get_event(self, message_id: MessageId) -> Envelope | None:
        stored = await self._store.read_inline(self._store.store.get_event, message_id)
        return None if stored is None else stored.envelope

    def events(self, *, logged: bool = False) -> AsyncIterator[NodeEvent]:
        """Subscribe to this node's events from now on (bounded: see EventHub); `logged`: with
        `Logged`, the arrival-log entries of each batch that arrived (a client feed's)."""
        return self._events.subscribe(logged=logged)

    @property
    def outbox_delivered(self) -> int:
        return self._services.outbox.delivered

    def unreachable(self) -> tuple[list[UserId], list[str]]:
        """(users, our own homes' peer ids) whose deliveries wait parked: no home answers."""
        users: list[UserId] = []
        homes: list[str] = []
        for destination in self._services.outbox.unreachable:
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
        """Tell the room's members who are our contacts that we are (or stopped) typing: never
        stored, never gossiped (SPEC §32.4).

        Raises:
            NotAuthorized: we are not a member of `room`.
        """
        payload = await self._services.outgoing.typing(room, active)
        await self._services.signals.typing(room, payload)


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
