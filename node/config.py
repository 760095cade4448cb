"""What a node needs to start: where its data lives and how it meets the mesh."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hearthmesh.node.identity.home_directory import (
    DEFAULT_MAX_LOOSE_CERTIFICATES,
    DEFAULT_MAX_STRANGERS,
    DEFAULT_RECORD_MAX_AGE_MS,
)
from hearthmesh.node.p2p.connection_trim import TrimPolicy
from hearthmesh.node.p2p.relay_limits import RelayServiceLimits
from hearthmesh.protocol.authority import DEFAULT_DEFERRAL_POLICY, DeferralPolicy
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.e2ee.ahead import DEFAULT_AHEAD, AheadPolicy
from hearthmesh.protocol.e2ee.rotation import DEFAULT_ROTATION, Rotation
from hearthmesh.protocol.inbound import InboundPolicy
from hearthmesh.protocol.membership_log import DEFAULT_MEMBERSHIP_LIMITS, MembershipLimits
from hearthmesh.protocol.outages import PROBE_MAX_MS
from hearthmesh.protocol.prefixes import PrefixPolicy
from hearthmesh.protocol.relay_choice import RelayPolicy
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.storage.api import DEFAULT_RELAY_QUOTA, RelayQuota
from hearthmesh.storage.async_store import BEHIND_MS

__all__ = ["DEFAULT_LISTEN", "NodeConfig"]

DEFAULT_LISTEN: Final = "/ip4/127.0.0.1/tcp/4470"


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Settings of one home node; every field has a default but `data_dir`."""

    data_dir: Path
    """Holds the LMDB environment, media blobs and the API token."""
    display_name: str = ""
    """The local user's display name; used when the identity is first created."""
    listen_addrs: tuple[str, ...] = (DEFAULT_LISTEN,)
    """libp2p multiaddrs; `tcp/0` picks a free port."""
    announce_addrs: tuple[str, ...] = ()
    """Addresses put in the home record instead of the listen addresses (NAT, proxies)."""
    bootstrap: tuple[str, ...] = ()
    """Multiaddrs with /p2p/<peer id> dialled at start, in the background, until they answer."""
    bootstrap_retry_max_ms: int = 30_000
    """Longest wait between two dials of a bootstrap peer that did not answer (the first
    retry comes after 250 ms, doubling; SPEC §11.8.4)."""
    enable_mdns: bool = False
    """Find peers on the LAN with mDNS."""
    share_presence: bool = True
    """Announce our user's presence (and home record) on gossip; off: invisible, and others
    find our inbox through hello and the DHT only."""
    presence_interval_ms: int = 10_000
    """How often this node announces its users online (and their home records)."""
    presence_ttl_ms: int = 30_000
    """A user not heard from for this long is offline."""
    relay_ttl_ms: int = 7 * 24 * 3600 * 1000
    """How long this node keeps envelopes it relays for others."""
    key_forward_interval_ms: int = 2_000
    """How often a device holding envelopes it cannot open asks its sibling homes for their
    room keys (SPEC §27.12)."""
    key_request_interval_ms: int = 2_000
    """How often a device holding envelopes it cannot open looks for sessions due to be asked
    of their senders (SPEC §27.13; each session then backs off on its own)."""
    withheld_levels: frozenset[Level] = frozenset()
    """Levels this node speaks but does not advertise (SPEC §20.7): peers then send it the
    form of the revision before, which it still takes; a rollout can hold a revision back."""
    key_ahead: AheadPolicy = DEFAULT_AHEAD
    """When our session key is shared ahead of our next send after a room's members or a
    member's record changed, and how often at most (SPEC §27.10.3): once the changes are
    quiet, at this home's own offset, within a bucket per room."""
    megolm_rotation: Rotation = DEFAULT_ROTATION
    """When a sending device starts a new Megolm session in a room besides a member leaving:
    `max_messages` (`megolm_rotate_messages`, 100) and `max_age_ms` (`megolm_rotate_ms`, a
    week), SPEC §27.9."""
    relay_quota: RelayQuota = DEFAULT_RELAY_QUOTA
    """What the relay inbox holds at most: per recipient, sender user and sending peer, for
    strangers and in total, each field with its default (SPEC §11.5.3, `RelayQuota`)."""
    receipt_wait_ms: int = BEHIND_MS
    """Longest a batch of receipts alone that arrived here waits to share the store's next
    commit (a client's send) before it commits on its own (SPEC §16.3.3)."""
    sync_interval_ms: int = 60_000
    """How often this node reconciles its rooms with its user's other homes (ARCHITECTURE §8)."""
    retry_poll_ms: int = 200
    """First wait of the delivery worker between looks at the stored outbox when nothing is
    known to come due; it doubles while looks find nothing, up to 2 s. The worker also wakes
    when the store's next entry comes due and whenever one is queued."""
    ack_timeout_ms: int = 10_000
    """How long a delivered batch may wait for its ack before its connection must answer a
    ping (`live_ping_ms`) to be waited on; one that does not is closed and the next try dials
    afresh (SPEC §11.5.2)."""
    ack_patience_ms: int = 60_000
    """How long in all a delivered batch may wait for its ack while its connection answers a
    ping each `ack_timeout_ms`: a slow home, not a gone one (SPEC §11.5.2)."""
    stream_open_ms: int = 5_000
    """How long opening a deliver stream over a held connection may take before that
    connection must answer a ping to be waited on (peer_link's `OPEN_TIMEOUT_S`, SPEC §11.5.2)."""
    capability_ask_ms: int = 10_000
    """How long a peer's answer to a capability request may take, dialling included, before
    the send that asked goes on without it (SPEC §20.7; `capabilities.ASK_S`)."""
    live_ping_ms: int = 5_000
    """How long a connection whose batch went unanswered has to answer a ping (or read
    anything) to be kept, slow but not gone (SPEC §11.5.2; the host's `LIVE_PING_S`)."""
    dial_retry_delay_ms: int = 100
    """The pause before a failed dial's first retry, doubled before each of the next two (the
    host's `DIAL_RETRY_DELAY_S`, py-libp2p's default)."""
    gap_grace_ms: int = 1500
    """How long a gap in a sender's sequence may stay open before other homes are asked for
    the missing envelopes (SPEC §26); the sender's own retries usually fill it sooner."""
    standing: StandingPolicy = field(default_factory=StandingPolicy)
    """What misbehaving peers pay (SPEC §11.6)."""
    # --- #12 resources slice: the purge service and directory bounds (SPEC §11.5.4, §13.6) ---
    purge_interval_ms: int = 60_000
    """How often the purge runs: relay TTL, history retention, stale directory entries
    (default 60 s; the first pass runs at start)."""
    purge_batch: int = 1_000
    """Most events (and relay entries) one purge transaction removes; the service yields to
    the event loop between batches (default 1,000)."""
    history_retention_ms: int | None = None
    """History older than this is purged; None (default): the store's `retention.ms` setting,
    else 30 days."""
    directory_max_strangers: int = DEFAULT_MAX_STRANGERS
    """Home records kept of users who are neither ours nor a contact or co-member of ours; the
    one learned longest ago goes first (default 2,000)."""
    directory_max_certificates: int = DEFAULT_MAX_LOOSE_CERTIFICATES
    """Device certificates kept from deliveries beyond those in kept records (default 4,096)."""
    directory_record_max_age_ms: int = DEFAULT_RECORD_MAX_AGE_MS
    """A stranger's home record issued longer ago than this is purged (default 30 days)."""
    # --- the peer edge (issue #12, slice "peeredge"): SPEC §10.4, §11.6 ---
    inbound: InboundPolicy = field(default_factory=InboundPolicy)
    """Inbound streams: at most 16 per peer and 128 in all, 32 MiB of partially read frames
    in all, a frame complete within 30 s, a stream idle at most 120 s (SPEC §10.4)."""
    prefixes: PrefixPolicy = field(default_factory=PrefixPolicy)
    """Address prefixes (IPv4 /24, IPv6 /48): at most 32 new peer ids per prefix per 10 min,
    a prefix banned once 3 of its peer ids were banned within 10 min; loopback exempt
    (SPEC §11.6.5)."""
    relay_choice: RelayPolicy = field(default_factory=RelayPolicy)
    """Relays for away recipients: co-members' homes, then peers connected 10 min with 8 good
    exchanges and no points, then others; 2 tried per batch, at random in a tier (SPEC §11.7)."""
    # --- room authority and membership state (issue #12, slice "authority") ---
    membership_limits: MembershipLimits = DEFAULT_MEMBERSHIP_LIMITS
    """Bounds of SPEC §12.4: 4,096 MEMBERSHIP events per room, 256 per sender in a room, a
    checkpoint of the folded state every 64 events, 1,024 groups' folds held in memory."""
    deferrals: DeferralPolicy = DEFAULT_DEFERRAL_POLICY
    """SPEC §12.5: a sender may be answered DEFERRED for authority 1,024 times at once, 16 more
    per second, 4,096 senders remembered; past that its envelopes are refused NOT_AUTHORIZED."""
    # --- issue #12 slice "supervision": availability under faults ---
    outage_probe_max_ms: int = PROBE_MAX_MS
    """Longest wait, default 5,000 ms, between two probes of a destination whose homes are
    down (SPEC §11.5.2): after a healed partition its backlog waits no longer than this."""
    # --- NAT traversal (#16): SPEC §10.6, §10.7 ---
    autonat_confirmations: int = 3
    """Agreeing AutoNAT verdicts of other nodes that make this node public or private."""
    autonat_loopback: bool = False
    """Run AutoNAT rounds even while every address we advertise is loopback (the host's
    `autonat_loopback`): off, such a node asks no server by itself (SPEC §10.6)."""
    relay_service: bool = True
    """Offer circuit relay v2 to peers ("every node a relay"), within `relay_limits`."""
    relay_limits: RelayServiceLimits = field(default_factory=RelayServiceLimits)
    """Hop service limits: 16 reservations, 8 circuits per reservation, 16 MiB and 600 s per
    circuit, reservations valid 1 h (SPEC §10.7)."""
    relay_reservations: int = 2
    """Relays a private node reserves on (co-members' homes first, SPEC §11.7's tiers)."""
    webrtc: bool = True
    """Upgrade a relayed connection that hole punching left relayed to WebRTC (SPEC §10.11)."""
    webrtc_retry_after_ms: tuple[int, ...] | None = None
    """Pauses before each new WebRTC offer after a failed one, while the peer is reached
    through relays alone (SPEC §10.11); None: the host's `RETRY_AFTER_S` (10 s, then 30 s)."""
    unilateral_dial_ms: int = 2_000
    """How long the plain direct dial of a relayed peer's addresses before each hole punch may
    take (SPEC §10.9; the host's `UNILATERAL_DIAL_S`): behind NATs it goes unanswered, and the
    punch starts only at this bound."""
    webrtc_upgrade_timeout_ms: int = 15_000
    """Bound on one whole WebRTC upgrade: signaling, ICE, DTLS and Noise (SPEC §10.11); ICE
    between homes whose NATs defeat it fails only at this bound."""
    stun_servers: tuple[str, ...] = ()
    """`stun:HOST:PORT` servers WebRTC's ICE asks where our NAT maps its UDP sockets (SPEC
    §10.16); none by default: the public IP peers observe, with the host port, is predicted."""
    upnp: bool = False
    """Ask the LAN's gateway (UPnP IGD) to forward our listen ports, and announce the mapped
    address (SPEC §10.12); `hearthmesh run` turns it on."""
    connection_trim: TrimPolicy | None = field(default_factory=TrimPolicy)
    """The connection manager's watermarks and graces (SPEC §10.17; the host's
    `connection_trim`); None: no duplicate or idle connection is closed."""
    trio_on_loop: bool = False
    """Run libp2p's trio as a guest on the event loop's thread, its I/O waited for by the loop
    (`node/p2p/guest_run.py`, ARCHITECTURE §5), not in a thread of its own. Off: on this
    project's loaded machines it made cross-node delivery slower; `hearthmesh run
    --trio-on-loop` (setting `trio_on_loop`) turns it on. A second node in one process runs
    its trio in a thread anyway, so an app embedding several nodes may turn it on for one."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form settings for embedding apps; ignored by the node."""
