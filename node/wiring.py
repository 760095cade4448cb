"""The one place the node's services are built and connected (ARCHITECTURE §6).

`build_services` makes every service of a node with its dependencies given by name, in an order
where each exists before whoever needs it; nothing reaches back up into `Node`. Where a service
needs a question answered, it gets the bound method of the service that owns the answer (our
siblings: `OwnHomes`; member sets: `RoomMembers` over `RoomRegistry`; home records:
`HomeRecords`), and what the store took in flows out on `StoreOutcomes` to `AfterStore` and to
the sleepers it wakes (the key askers' `HeldWatch`es, the `GapFetcher`).
`serve` then hands the host the stream handlers, gossip validators and peer policy, each stream
under the supervisor. `Node` is the facade: it owns the lifetime (store, keys, host, supervisor)
and the embedding API, and calls this.

State: none; the services own theirs (each module docstring names it).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hearthmesh.node.after_store import AfterStore
from hearthmesh.node.clock import CorrectedClock, HybridClock
from hearthmesh.node.config import NodeConfig
from hearthmesh.node.delivery.fetch import FetchService
from hearthmesh.node.delivery.gap_fetch import GapFetcher
from hearthmesh.node.delivery.gossip_out import GossipPublisher
from hearthmesh.node.delivery.inbox import Inbox
from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.delivery.outcomes import StoreOutcomes
from hearthmesh.node.delivery.outgoing import Outgoing
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.delivery.receiver import Receiver
from hearthmesh.node.delivery.relay import RelayForwarder
from hearthmesh.node.delivery.relay_choice import RelayChooser
from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.delivery.sent_in_hand import SentInHand
from hearthmesh.node.delivery.sync import SyncService
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.key_ahead import KeyAhead
from hearthmesh.node.e2ee.key_claims import KeyServer
from hearthmesh.node.e2ee.key_forwarding import AnswerTaker, KeyForwarding, KeyForwardServer
from hearthmesh.node.e2ee.key_requests import KeyRequests, KeyRequestServer
from hearthmesh.node.e2ee.opened_late import LateNews
from hearthmesh.node.e2ee.pickle_key import load_or_create_pickle_key
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.e2ee.room_sender import RoomSender
from hearthmesh.node.identity.certificates import CertificateLookup, ThreadCertificates
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.home_lookup import HomeLookups
from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.identity.linking import LinkService
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.identity.trust_watch import TrustWatch
from hearthmesh.node.identity.verification import VerificationService
from hearthmesh.node.media.fetch import MediaFetcher
from hearthmesh.node.media.server import MediaServer
from hearthmesh.node.mesh.capabilities import CapabilityServer, PeerLevels, Revisions
from hearthmesh.node.mesh.greetings import Greetings
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.mesh.meeting import Meeting
from hearthmesh.node.mesh.presence import PresenceService
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.purge import PurgeService
from hearthmesh.node.rooms.groups import GroupService
from hearthmesh.node.rooms.history_handoff import HistoryFetch, HistoryServer
from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.rooms.topics import ROOM_TOPIC_PREFIX, RoomTopics
from hearthmesh.node.run_state import RunState
from hearthmesh.node.social.people import Social
from hearthmesh.node.social.privacy import Privacy
from hearthmesh.node.social.signals import ContactSignals
from hearthmesh.node.subscribers import EventHub
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.arrival import ArrivalRules
from hearthmesh.protocol.capabilities import CAPS_PROTOCOL, Level
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL
from hearthmesh.protocol.e2ee import (
    KEY_FORWARD_PROTOCOL,
    KEY_REQUEST_PROTOCOL,
    KEYS_PROTOCOL,
    AheadPlan,
)
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.fetch import FETCH_PROTOCOL
from hearthmesh.protocol.gossip import PRESENCE_TOPIC, SIGNALS_PROTOCOL
from hearthmesh.protocol.hello import HELLO_LEVELS_PROTOCOL, HELLO_PROTOCOL
from hearthmesh.protocol.history_share import HISTORY_PROTOCOL
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invites import JOIN_PROTOCOL, MAX_INVITE_ADDRS
from hearthmesh.protocol.linking import LINK_PROTOCOL
from hearthmesh.protocol.media import MEDIA_PROTOCOL
from hearthmesh.protocol.sync import SYNC_PROTOCOL
from hearthmesh.protocol.verification import VERIFY_PROTOCOL
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["Services", "announce_addrs", "build_services", "serve"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """Every service of one node, built by `build_services`."""

    directory: HomeDirectory
    rooms: RoomRegistry
    members: RoomMembers
    homes: OwnHomes
    standing: PeerStanding
    links: PeerLinks
    outcomes: StoreOutcomes
    receiver: Receiver
    relay: RelayForwarder
    presence: PresenceService
    records: HomeRecords
    home_lookups: HomeLookups
    relays: RelayChooser
    outbox: OutboxWorker
    purge: PurgeService
    linking: LinkService
    sync: SyncService
    hello: HelloService
    media_server: MediaServer
    crypto: DeviceCrypto
    key_server: KeyServer
    key_forward_server: KeyForwardServer
    key_forwarding: KeyForwarding
    key_request_server: KeyRequestServer
    key_requests: KeyRequests
    media: MediaFetcher
    fetch: FetchService
    gaps: GapFetcher
    topics: RoomTopics
    gossip_out: GossipPublisher
    outgoing: Outgoing
    sent: SentInHand
    key_ahead: KeyAhead
    greetings: Greetings
    verification: VerificationService
    capabilities: CapabilityServer
    peer_levels: PeerLevels
    revisions: Revisions
    groups: GroupService
    history_server: HistoryServer
    privacy: Privacy
    signals: ContactSignals
    social: Social


def announce_addrs(config: NodeConfig, host: P2PHost) -> tuple[str, ...]:
    """Where our home record and invites say this node is, each naming a peer id: the
    configured addresses, else the host's listen addresses as they are now (relayed ones come
    and go, SPEC §10.7). A configured address given without `/p2p/` (as `--announce` takes
    it) gets ours: the record keeps only addresses that end in our id, and one announced bare
    left the record with none, so a peer could dial a restarted node only once it dialled
    them (`simulate --latency --kill-every`: p50 21-41 s, SPEC §20.4)."""
    addrs = config.announce_addrs or tuple(host.listen_addrs)
    return tuple(a if "/p2p/" in a else f"{a}/p2p/{host.peer_id}" for a in addrs)


def build_services(
    *,
    config: NodeConfig,
    keyring: Keyring,
    store: AsyncStore,
    host: P2PHost,
    clock: CorrectedClock,
    hlc: HybridClock,
    events: EventHub,
    supervisor: Supervisor,
    run_state: RunState,
) -> Services:
    """Build a node's services over its opened store, keys and started host; start none."""
    user = keyring.user_id
    local = {user}
    rng = secrets.token_bytes
    directory = HomeDirectory(
        local_users=local,
        max_strangers=config.directory_max_strangers,
        max_loose_certificates=config.directory_max_certificates,
        record_max_age_ms=config.directory_record_max_age_ms,
    )
    rooms = RoomRegistry(local, limits=config.membership_limits)
    members = RoomMembers(store=store, rooms=rooms, user=user)
    crypto = DeviceCrypto(  # creates the Olm account on first start (SPEC §27.1)
        store.store,
        pickle_key=load_or_create_pickle_key(config.data_dir),
        device_key=keyring.device,
        user=user,
    )
    opener = RoomOpener(crypto)
    homes = OwnHomes(
        keyring=keyring,
        clock=clock,
        peer_id=host.peer_id,
        addrs=functools.partial(announce_addrs, config, host),
        store=store,
        directory=directory,
        own_bundle=crypto.key_bundle(clock.now_ms()),
    )
    release = ReleaseOrder()
    sent = SentInHand()  # our sends (Outgoing), for the receipts that name them (Inbox)
    privacy = Privacy()  # loaded by Node.start before anything arrives
    inbox = Inbox(
        local_users=local,
        rules=ArrivalRules(local, deferrals=config.deferrals, blocked=privacy.blocks),
        privacy=privacy,
        rooms=rooms,
        release=release,
        directory=directory,
        relay_ttl_ms=config.relay_ttl_ms,
        sibling_destinations=homes.sibling_destinations,
        opener=opener,
        sent=sent,
    )
    standing = PeerStanding(
        clock=clock,
        own_peer=host.peer_id,
        protected=homes.is_sibling,
        disconnect=host.disconnect_nowait,
        gate_prefix=host.ban_prefix,
        policy=config.standing,
        prefix_policy=config.prefixes,
    )
    links = PeerLinks(
        host,
        on_ack=standing.exchanged,
        on_bad_ack=standing.answer_charger(DELIVER_PROTOCOL),
        ack_timeout_s=config.ack_timeout_ms / 1000,
        ack_patience_s=config.ack_patience_ms / 1000,
        open_timeout_s=config.stream_open_ms / 1000,
    )
    outcomes = StoreOutcomes()
    receiver = Receiver(
        inbox=inbox,
        store=store,
        keyring=keyring,
        clock=clock,
        hlc=hlc,
        events=events,
        on_outcome=outcomes.publish,
        is_sibling=homes.is_sibling,
        standing=standing,
    )
    validator_certificates = ThreadCertificates()  # the trio thread's own (identity/certificates)
    relay = RelayForwarder(
        store=store,
        links=links,
        directory=directory,
        clock=clock,
        poll_ms=max(config.retry_poll_ms, 1000),
    )
    trust = TrustWatch(store=store, emit=events.emit)
    signals = ContactSignals(
        host=host,
        store=store,
        directory=directory,
        privacy=privacy,
        user=user,
        clock=clock,
        certificates=receiver.certificates,
        members=members.of,
        emit=events.emit,
        on_refused=standing.charger(SIGNALS_PROTOCOL),
    )
    presence = PresenceService(
        signals=signals,
        trust=trust,
        host=host,
        store=store,
        directory=directory,
        keyring=keyring,
        clock=clock,
        hlc=hlc,
        home_record=homes.signed_record,
        emit=events.emit,
        interval_ms=config.presence_interval_ms,
        ttl_ms=config.presence_ttl_ms,
        share=config.share_presence,
        certificates=receiver.certificates,
        validator_certificates=validator_certificates,
    )
    records = HomeRecords(
        user=user,
        host=host,
        store=store,
        clock=clock,
        directory=directory,
        homes=homes,
        relay=relay,
        presence=presence,
        trust=trust,
        supervisor=supervisor,
        run_state=run_state,
    )
    home_lookups = HomeLookups(
        records.find,
        spawn=supervisor.spawn,
        clock=clock,
        rng=rng,
        issued_ms=directory.issued_ms,
    )
    relays = RelayChooser(
        host=host,
        standing=standing,
        directory=directory,
        co_members=members.co_members,
        rng=rng,
        policy=config.relay_choice,
    )
    outbox = OutboxWorker(
        store=store,
        relays=relays,
        links=links,
        directory=directory,
        keyring=keyring,
        clock=clock,
        rng=rng,
        emit=events.emit,
        poll_ms=config.retry_poll_ms,
        lookups=home_lookups,
        probe_max_ms=config.outage_probe_max_ms,
    )
    records.revive_with(outbox.revive)
    presence.revive_with(functools.partial(outbox.revive, cause="presence"))
    purge = PurgeService(
        store=store,
        directory=directory,
        clock=clock,
        interval_ms=config.purge_interval_ms,
        batch=config.purge_batch,
        retention_ms=config.history_retention_ms,
    )
    linking = LinkService(
        add_home=records.add_home,
        readdress_home=records.readdress_home,
        now_ms=clock.now_ms,
        rng=rng,
        standing=standing,
    )
    sync = SyncService(
        host=host,
        store=store,
        rooms=rooms,
        user=user,
        is_sibling=homes.is_sibling,
        now_ms=clock.now_ms,
        wake_outbox=outbox.wake,
        on_refused=standing.charger(SYNC_PROTOCOL),
    )
    capabilities = CapabilityServer(
        on_refused=standing.charger(CAPS_PROTOCOL), withheld=config.withheld_levels
    )
    peer_levels = PeerLevels(
        host=host,
        clock=clock,
        on_refused=standing.charger(CAPS_PROTOCOL),
        reach=links.reach,
        ask_s=config.capability_ask_ms / 1000,
        background_asks=config.key_ahead.asks_at_once,
    )
    hello = HelloService(
        host=host,
        clock=clock,
        home_record=homes.signed_record,
        learn=functools.partial(records.learn, source="hello"),
        takes_time_from=homes.is_clock_source,
        standing=standing,
        levels=capabilities.levels,
        peer_levels=peer_levels,
    )
    media_server = MediaServer(
        store=store,
        directory=directory,
        own_user=user,
        sibling_peers=homes.sibling_peers,
        on_refused=standing.charger(MEDIA_PROTOCOL),
        on_unreadable=supervisor.unreadable,
        clock=clock,
    )
    key_server = KeyServer(
        store=store,
        crypto=crypto,
        device=keyring.device_id,
        clock=clock,
        on_refused=standing.charger(KEYS_PROTOCOL),
    )
    key_forward_server = KeyForwardServer(
        store=store,
        crypto=crypto,
        homes=homes,
        clock=clock,
        on_refused=standing.charger(KEY_FORWARD_PROTOCOL),
    )
    # what a forward, a key request or a history handoff opens
    news = LateNews(
        release=release,
        emit=events.emit,
        publish=outcomes.publish,
        slow=receiver.slow,
    )
    taker = AnswerTaker(
        store=store,
        crypto=crypto,
        opener=opener,
        user=user,
        clock=clock,
        news=news,
        on_bad_answer=standing.bad_answer,
    )
    key_forwarding = KeyForwarding(
        host=host,
        store=store,
        taker=taker,
        homes=homes,
        clock=clock,
        interval_ms=config.key_forward_interval_ms,
    )
    key_request_server = KeyRequestServer(
        store=store,
        crypto=crypto,
        directory=directory,
        find_record=home_lookups.find,
        members_of=members.of,
        own_bundle=homes.own_bundle,
        user=user,
        clock=clock,
        on_refused=standing.charger(KEY_REQUEST_PROTOCOL),
    )
    key_requests = KeyRequests(
        host=host,
        links=links,
        store=store,
        taker=taker,
        directory=directory,
        find_record=home_lookups.find,
        user=user,
        device=keyring.device_id,
        clock=clock,
        interval_ms=config.key_request_interval_ms,
    )
    media = MediaFetcher(
        host=host,
        links=links,
        store=store,
        directory=directory,
        clock=clock,
        rng=rng,
        find_home=home_lookups.find,
        own_user=user,
        on_bad_answer=standing.answer_charger(MEDIA_PROTOCOL),
        siblings=homes.sibling_peers,
    )
    supervisor.observe_unreadable(media.replace_damaged)
    verification = VerificationService(
        host=host,
        links=links,
        store=store,
        keyring=keyring,
        homes=homes,
        directory=directory,
        standing=standing,
        clock=clock,
        emit=events.emit,
    )
    fetch = FetchService(
        host=host,
        store=store,
        rooms=rooms,
        directory=directory,
        is_sibling=homes.is_sibling,
        certificate_of=CertificateLookup(keyring=keyring, directory=directory).of,
        on_refused=standing.charger(FETCH_PROTOCOL),
        clock=clock,
    )
    gaps = GapFetcher(
        release=release,
        fetch=fetch,
        receiver=receiver,
        links=links,
        store=store,
        rooms=rooms,
        directory=directory,
        clock=clock,
        rng=rng,
        user=user,
        peer_id=host.peer_id,
        sibling_peers=homes.sibling_peers,
        grace_ms=config.gap_grace_ms,
    )
    topics = RoomTopics(
        host=host,
        receiver=receiver,
        clock=clock,
        rooms=rooms,
        supervisor=supervisor,
        standing=standing,
        running=run_state.running,
        certificates=validator_certificates,
    )
    gossip_out = GossipPublisher(host)
    revisions = Revisions(  # which form of a revised event reaches whom (SPEC §20.7)
        levels=peer_levels,
        user=user,
        homes_of=directory.homes,
        addresses_of=directory.addresses,
        siblings=homes.sibling_peers,
    )
    outgoing = Outgoing(
        keyring=keyring,
        hlc=hlc,
        clock=clock,
        store=store,
        rooms=rooms,
        members=members,
        outbox=outbox,
        gossip=gossip_out,
        sibling_destinations=homes.sibling_destinations,
        outcomes=outcomes,
        revisions=revisions,
        encryption=RoomSender(
            crypto=crypto,
            store=store,
            directory=directory,
            find_record=home_lookups.find,  # a few members' records, a send waiting on them
            device=keyring.device_id,
            clock=clock,
            rotation=config.megolm_rotation,
            owed_held=functools.partial(revisions.advertised, level=Level.OWED_HELD),
            ask_levels=revisions.ask_due,
        ),
        sent=sent,
    )
    key_ahead = KeyAhead(
        share=outgoing.share_ahead,
        is_member=functools.partial(_member_held, rooms),
        spawn=supervisor.spawn,
        plan=AheadPlan(config.key_ahead, keyring.device_id),
        now_ms=clock.now_ms,
    )
    directory.watch(key_ahead.record_learnt)
    social = Social(store=store, privacy=privacy, outgoing=outgoing, user=user, now_ms=clock.now_ms)
    meeting = Meeting(
        hello=hello,
        outbox=outbox,
        host=host,
        records=records,
        supervisor=supervisor,
    )
    greetings = Greetings(meet=meeting.meet, spawn=supervisor.spawn)
    after_store = AfterStore(
        user=user,
        run_state=run_state,
        relay=relay,
        lookups=home_lookups,
        homes=homes,
        outbox=outbox,
        media=media,
        members=members,
        topics=topics,
        events=events,
        supervisor=supervisor,
        share_profile=social.share_with,
        learn_rooms=sync.learn_rooms,
        key_ahead=key_ahead,
    )
    outcomes.subscribe(after_store.react)
    # the sleepers a committed batch wakes (each names why in its module)
    outcomes.subscribe(key_forwarding.held.after_batch)
    outcomes.subscribe(key_requests.after_batch)
    outcomes.subscribe(gaps.after_batch)
    history_server = HistoryServer(
        store=store,
        rooms=rooms,
        crypto=crypto,
        directory=directory,
        find_record=home_lookups.find,
        own_bundle=homes.own_bundle,
        wake_outbox=outbox.wake,
        clock=clock,
        on_refused=standing.charger(HISTORY_PROTOCOL),
    )
    history = HistoryFetch(
        host=host,
        store=store,
        rooms=rooms,
        taker=taker,
        directory=directory,
        user=user,
    )
    groups = GroupService(
        store=store,
        rooms=rooms,
        outgoing=outgoing,
        records=records,
        own_record=homes.signed_record,
        addrs=functools.partial(_invite_addrs, config, host),
        addresses_of=directory.addresses,
        history=history,
        host=host,
        greetings=greetings,
        events=events,
        clock=clock,
        user=user,
        on_refused=standing.charger(JOIN_PROTOCOL),
    )
    return Services(
        directory=directory,
        rooms=rooms,
        members=members,
        homes=homes,
        standing=standing,
        links=links,
        outcomes=outcomes,
        receiver=receiver,
        relay=relay,
        presence=presence,
        records=records,
        home_lookups=home_lookups,
        relays=relays,
        outbox=outbox,
        purge=purge,
        linking=linking,
        sync=sync,
        hello=hello,
        media_server=media_server,
        crypto=crypto,
        key_server=key_server,
        key_forward_server=key_forward_server,
        key_forwarding=key_forwarding,
        key_request_server=key_request_server,
        key_requests=key_requests,
        media=media,
        fetch=fetch,
        gaps=gaps,
        topics=topics,
        gossip_out=gossip_out,
        outgoing=outgoing,
        sent=sent,
        key_ahead=key_ahead,
        greetings=greetings,
        verification=verification,
        capabilities=capabilities,
        peer_levels=peer_levels,
        revisions=revisions,
        groups=groups,
        history_server=history_server,
        privacy=privacy,
        signals=signals,
        social=social,
    )


def _member_held(rooms: RoomRegistry, room: RoomId, user: UserId) -> bool:
    """Is `user` a member of `room` by the state memory holds (`KeyAhead`: no store read)?"""
    state = rooms.view(room)
    return state is not None and user in state.members


def _invite_addrs(config: NodeConfig, host: P2PHost) -> tuple[str, ...]:
    """Our addresses as an invite names them: each with /p2p/, at most MAX_INVITE_ADDRS."""
    return announce_addrs(config, host)[:MAX_INVITE_ADDRS]


def serve(services: Services, *, host: P2PHost, supervisor: Supervisor) -> None:
    """Give the host our stream protocols and gossip validators, each under the supervisor:
    what a peer's stream makes a handler raise is charged to that peer and ends that stream
    alone (SPEC §11.8)."""
    s = services
    handlers: dict[str, Callable[[FrameStream], Awaitable[None]]] = {
        LINK_PROTOCOL: s.linking.serve,
        SYNC_PROTOCOL: s.sync.serve,
        DELIVER_PROTOCOL: s.receiver.serve_deliver,
        HELLO_PROTOCOL: s.hello.serve,
        HELLO_LEVELS_PROTOCOL: s.hello.serve_with_levels,
        MEDIA_PROTOCOL: s.media_server.serve,
        KEYS_PROTOCOL: s.key_server.serve,
        KEY_FORWARD_PROTOCOL: s.key_forward_server.serve,
        KEY_REQUEST_PROTOCOL: s.key_request_server.serve,
        FETCH_PROTOCOL: s.fetch.serve,
        VERIFY_PROTOCOL: s.verification.serve,
        JOIN_PROTOCOL: s.groups.serve,
        HISTORY_PROTOCOL: s.history_server.serve,
        CAPS_PROTOCOL: s.capabilities.serve,
        SIGNALS_PROTOCOL: s.signals.serve,
    }
    for protocol, handler in handlers.items():
        host.set_stream_handler(protocol, supervisor.handler(protocol, handler))
    host.set_topic_validator(
        PRESENCE_TOPIC, s.standing.gossip_validator(s.presence.check, topic=PRESENCE_TOPIC)
    )
    host.set_topic_validator(
        ROOM_TOPIC_PREFIX, s.standing.gossip_validator(s.topics.check, topic=ROOM_TOPIC_PREFIX)
    )
