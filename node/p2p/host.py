"""`P2PHost`: a py-libp2p host in its own trio thread, driven from asyncio (ARCHITECTURE §5, §9).

This module, `libp2p_gossip`, `libp2p_dht` and `libp2p_yamux` (the parts the host owns) and
`trio_bridge` are the only ones that import trio or libp2p. libp2p objects are touched on the
trio thread only: every public method either hops there with `TrioThread.run` (awaitable,
cancellable) or schedules a callback there with `run_sync_soon`. What libp2p reports (inbound
streams, gossip, connections, mDNS) comes back with `call_soon_threadsafe`.

Transport: TCP + Noise (only) + yamux, at most one connection per peer (avoids the 250 ms dial
fallback of libp2p-notes). Gossip: see `libp2p_gossip`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.host.basic_host import BasicHost
from libp2p.identity_utils import create_identity_from_seed
from libp2p.io.exceptions import IncompleteReadError
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

from hearthmesh.node.clock import Clock, SystemClock
from hearthmesh.node.p2p import eof_reads, task_parents
from hearthmesh.node.p2p.addresses import dialable_addrs, remote_ip
from hearthmesh.node.p2p.autonat import AutoNatLayer, Reachability
from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.circuit_relay import CircuitRelayLayer, relay_of
from hearthmesh.node.p2p.close_peer import close_peer_keeping_newer
from hearthmesh.node.p2p.connection_budget import ConnectionBudget
from hearthmesh.node.p2p.connection_manager import ConnectionManager, dial_no_peerstore
from hearthmesh.node.p2p.connection_trim import TrimPolicy, dht_kept
from hearthmesh.node.p2p.dht import KAD_PROTOCOL, DhtLayer, DhtSelect, DhtValidate
from hearthmesh.node.p2p.dial_answers import DialAnswers
from hearthmesh.node.p2p.errors import (
    DialFailed,
    HostClosed,
    P2PError,
    PeerUnreachable,
    ProtocolNotSpoken,
    StreamClosed,
    StreamOpenFailed,
    StreamRefused,
    describe_error,
)
from hearthmesh.node.p2p.frame_stream import FrameStream, ReadLimits
from hearthmesh.node.p2p.gossip import (
    SUBSCRIPTION_QUEUE_SIZE,
    GossipValidator,
    MessageIdFn,
    Subscription,
)
from hearthmesh.node.p2p.gossipsub import HEARTBEAT_S, GossipLayer
from hearthmesh.node.p2p.hole_punch import UNILATERAL_DIAL_S, HolePunchCounts, HolePunchLayer
from hearthmesh.node.p2p.kept_addrs import keep_addrs
from hearthmesh.node.p2p.mdns import announced_on_lan
from hearthmesh.node.p2p.periodic_jobs import PeriodicJobs
from hearthmesh.node.p2p.pipelined_select import (
    LazyOpening,
    PipelinedSelect,
    pipeline_negotiation,
)
from hearthmesh.node.p2p.prefix_gate import PrefixGate
from hearthmesh.node.p2p.quick_locks import quicken_connection, quicken_stream
from hearthmesh.node.p2p.relay_limits import RelayServiceLimits
from hearthmesh.node.p2p.stream_slots import PerPeerStreamSlots
from hearthmesh.node.p2p.upnp import UpnpLayer
from hearthmesh.node.p2p.webrtc import (
    RETRY_AFTER_S,
    SIGNALING_PROTOCOL,
    UPGRADE_TIMEOUT_S,
    WebRtcLayer,
    is_webrtc,
)
from hearthmesh.node.p2p.wire_counts import WireCounts, stream_opened, track
from hearthmesh.node.p2p.yamux import (
    adopt_yamux_stream,
    answers_ping,
    lean_frame_writes,
    read_plain_frames_lean,
    watch_reads,
)
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    NodeFailed,
    RemoteProtocolError,
    StorageError,
    TooManyStreams,
    UnreadableItem,
)
from hearthmesh.protocol.framing import MAX_FRAME_BYTES
from hearthmesh.protocol.inbound import InboundLedger, InboundPolicy

__all__ = [
    "CHARGED_CONNECTIONS",
    "CHARGED_GOSSIP",
    "CHARGED_STREAMS",
    "CHARGED_WEBRTC_STREAMS",
    "DIRECT_PATH",
    "DISCONNECT_ABORT_S",
    "HEARTBEAT_S",
    "STOP_ABORT_S",
    "STOP_GRACE_S",
    "WEBRTC_PATH",
    "ConnectionHandler",
    "HostConfig",
    "P2PHost",
    "PeerFilter",
    "RefusalHandler",
    "StreamHandler",
    "peer_id_from_seed",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

StreamHandler = Callable[[FrameStream], Awaitable[None]]
"""Serves one inbound stream on asyncio; the stream is closed (or reset on error) after it."""

ConnectionHandler = Callable[[str, bool], None]
"""Told on asyncio `(peer id, True)` when a peer's first connection opens (dialled by us or
by it, found by mDNS or bootstrap) and `(peer id, False)` when its last one closes."""

PeerFilter = Callable[[str], bool]
"""Asked on asyncio for each inbound stream: False resets it unread (a banned peer)."""


class RefusalHandler(Protocol):
    """Told on asyncio of what a peer did wrong at the stream level (SPEC §10.4, §11.6)."""

    def __call__(
        self, peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
    ) -> None:
        """`protocol`: the stream protocol, or `CHARGED_*`'s kind of input, it came on;
        `whole_frame=False` for a lesser offence (one stream past the peer's cap)."""
        ...


CHARGED_STREAMS: Final = "streams"
"""A stream past its peer's slots, reset before its protocol was negotiated (SPEC §10.4)."""
CHARGED_CONNECTIONS: Final = "connections"
"""A connection past its peer's inbound budget (SPEC §11.6.6)."""
CHARGED_GOSSIP: Final = "gossipsub"
"""A gossip RPC that does not decode, or a peer greeting again past its budget (SPEC §14.3)."""
CHARGED_WEBRTC_STREAMS: Final = "webrtc-streams"
"""A WebRTC stream past its read-ahead or its peer's share of the budget (SPEC §10.11)."""


DIRECT_PATH: Final = "direct"
WEBRTC_PATH: Final = "webrtc"
"""A peer path (`P2PHost.peer_paths`) and hole punch transport: a WebRTC connection."""
CLOSED_UNANSWERED: Final = "unanswered"
"""A close reason (`P2PHost.connections_closed`): ours, a batch or a stream went unanswered and
the connection answered no ping either (SPEC §11.5.2)."""
CLOSED_REFUSED: Final = "refused"
"""A close reason: ours, the peer or its address prefix is banned or not admitted (SPEC §11.6)."""
CLOSED_TRIMMED: Final = "trimmed"
"""A close reason: ours, libp2p closed one of two connections to a peer (it keeps one,
`max_connections_per_peer`): both ends dialled, or a relayed or hole-punched one came."""
CLOSED_BY_PEER: Final = "peer_or_transport"
"""A close reason: not ours (the peer closed it, or libp2p or the transport failed it)."""
LIVE_PING_S: Final = 5.0
"""How long a connection whose batch went unanswered has to answer a ping (or read anything
from its peer) to be kept (`redial_nowait`, SPEC §11.5.2)."""
DIAL_RETRY_DELAY_S: Final = RetryConfig().initial_delay
"""The pause before the first of a failed dial's retries, doubled before each next (py-libp2p's
0.1 s: a refused dial fails after ~0.7 s, three retries in)."""
NEGOTIATION_S: Final = 60.0
"""How long libp2p waits for the two ends of a stream to agree on its protocol, each way (10 s
by default). Under load (50 nodes on 2 cores) a live peer's answer took longer by the
thousand ("response timed out after 10s"), and each failed open failed what it was for: a
batch then went to a relay and its destination was parked (SPEC §11.5.2). With our opens'
bound raised alone, 322 deliver opens in one workload failed instead with their stream ended
under the negotiation (likely the peer's own 10 s bound), so inbound streams get as long: a
stranger's streams that never negotiate are still bounded by its stream slots
(`stream_slots`, SPEC §10.4), only held longer."""
STOP_GRACE_S: Final = 2.0
"""Upper bound for closing all connections at stop (see `_close_quietly`)."""
STOP_ABORT_S: Final = 2 * STOP_GRACE_S
"""How long after a stop began the TCP sockets still open are closed under their connections.

A connection to a peer that stopped answering (a partition) can hold a write blocked on a full
send buffer, which TCP retries for ~15 minutes. The muxer's write lock stays held, and
py-libp2p resets a stream whose opening failed (or was given up) in a shielded scope that
waits for that lock (`BasicHost.new_stream`): that reset never ended, nor did the nursery
holding it, so the stop hung, and a test's hang guard with it. Closing the socket fails the
blocked write, and every one queued behind it, at once."""
DISCONNECT_ABORT_S: Final = STOP_GRACE_S
"""How long a disconnect (a ban, a dead path's redial), or the close of a connection that
answered no ping, waits for its connections to close before it closes their TCP sockets under
them. py-libp2p's close writes a GO_AWAY under the muxer's write lock, holding its stream lock
meanwhile: behind a partition or a peer that stopped reading, a write stuck on the full socket
held that lock, and the close with it, until TCP gave up, ~15 minutes, with the connection
listed and its reads stopped. Closing the socket fails the stuck write, and the close goes
on."""
_SEED_BYTES: Final = 32


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    """How to build one node's libp2p host."""

    identity_seed: bytes
    """32-byte Ed25519 seed: the same seed gives the same peer id after a restart."""
    listen_addrs: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    """Multiaddrs to listen on; `tcp/0` picks a free port (see `P2PHost.listen_addrs`)."""
    bootstrap: list[str] = field(default_factory=list)
    """Multiaddrs with `/p2p/<id>` dialled in the background at start (failures are logged)."""
    enable_mdns: bool = False
    """Announce on and browse the LAN with mDNS; peers found are connected automatically."""
    max_frame_bytes: int = MAX_FRAME_BYTES
    """Largest frame on a `FrameStream` (both directions)."""
    message_id: MessageIdFn | None = None
    """Gossip message id over the payload; None keeps libp2p's (origin, seqno) id."""
    subscription_queue_size: int = SUBSCRIPTION_QUEUE_SIZE
    """Undelivered gossip messages per subscription before new ones are dropped."""
    gossip_degree: int = 6
    """Gossipsub D (mesh size target); D_low = D - 2, D_high = D + 2."""
    dht_validate: DhtValidate | None = None
    """Validator of the DHT's one namespace (`/home/...`); with `dht_select` it turns on the
    kad-dht (server mode). Pure and thread-safe: it runs on the trio thread."""
    dht_select: DhtSelect | None = None
    """Picks the best of several valid values for one DHT key (see `dht_validate`)."""
    inbound: InboundPolicy = field(default_factory=InboundPolicy)
    """Bounds on inbound streams: counts, bytes of partial frames, timeouts (SPEC §10.4)."""
    dial_from: str | None = None
    """The IP address outbound TCP dials leave from; None lets the system pick. The hostile
    bench's flooder uses it to come from another network than the honest peers (on loopback)."""
    # --- NAT traversal (#16) ---
    announce_addrs: list[str] = field(default_factory=list)
    """Addresses AutoNAT servers are asked to dial instead of `listen_addrs` (SPEC §10.6)."""
    autonat_confirmations: int = 3
    """Agreeing AutoNAT verdicts that make this node public or private (SPEC §10.6)."""
    autonat_interval_s: float = 300.0
    """Time between two rounds of AutoNAT checks once reachability is known."""
    autonat_checks: bool = True
    """Ask the connected AutoNAT servers, in rounds, whether peers can dial us (SPEC §10.6).
    Off, only `P2PHost.check_reachability` asks, so reachability stays unknown until it is
    called (and a private node reserves no relay); the host still answers peers' requests.
    Tests that need a connection's streams to be theirs alone turn it off."""
    autonat_loopback: bool = False
    """Run those rounds even while every address we advertise is loopback. Off, such a node
    (the tests' nodes, say) asks no server by itself: only this machine could dial it back, so
    the verdict would say nothing of peers elsewhere (SPEC §10.6)."""
    relay_service: bool = True
    """Offer circuit relay v2 hop service to peers, within `relay_limits` (SPEC §10.7)."""
    relay_limits: RelayServiceLimits = field(default_factory=RelayServiceLimits)
    """Reservations, circuits, bytes and time the hop service gives (SPEC §10.7)."""
    relay_reservations: int = 2
    """Relays a private node reserves on, in `relay_rank` order (SPEC §10.7)."""
    unilateral_dial_s: float = UNILATERAL_DIAL_S
    """How long the plain direct dial before each hole punch may take (SPEC §10.9)."""
    webrtc: bool = True
    """Upgrade a relayed connection that hole punching left relayed to WebRTC (SPEC §10.11)."""
    stun_servers: list[str] = field(default_factory=list)
    """`stun:HOST:PORT` servers WebRTC's ICE learns our NAT's mapping from (SPEC §10.16)."""
    webrtc_retry_after_s: tuple[float, ...] = RETRY_AFTER_S
    """Pauses before each new WebRTC offer after a failed one (SPEC §10.11)."""
    webrtc_upgrade_timeout_s: float = UPGRADE_TIMEOUT_S
    """Bound on one whole WebRTC upgrade (SPEC §10.11)."""
    live_ping_s: float = LIVE_PING_S
    """How long a connection whose batch went unanswered has to answer a ping to be kept
    (SPEC §11.5.2); tests of a dead path shorten it."""
    dial_retry_delay_s: float = DIAL_RETRY_DELAY_S
    """The pause before a failed dial's first retry (`DIAL_RETRY_DELAY_S`); the test nodes
    shorten it, as their away homes' refused dials held each send ~0.7 s."""
    stop_grace_s: float = STOP_GRACE_S
    """Bound on closing the connections at stop; twice it, the sockets still open are closed
    under them (`STOP_ABORT_S`). The test of a stop stuck on a cut-off peer shortens it."""
    upnp: bool = False
    """Ask the LAN's gateway to forward our listen ports and advertise the mapped addresses
    first (SPEC §10.12)."""
    relay_rank: Callable[[list[str]], Awaitable[list[str]]] | None = None
    """Orders the connected peers as candidate relays, best first (co-members' homes first,
    SPEC §11.7); runs on asyncio; None (or a failure) keeps the order of `connected_peers`."""
    trio_on_loop: bool = False
    """Run libp2p's trio as a guest on the event loop's thread, not in a thread of its own
    (`TrioThread`, ARCHITECTURE §5; `NodeConfig.trio_on_loop`)."""
    clock: Clock = field(default_factory=SystemClock)
    """Refills the peers' connection budgets (`ConnectionBudget`) and times the connections'
    use (`ConnectionManager`); read on the trio thread."""
    connection_trim: TrimPolicy | None = field(default_factory=TrimPolicy)
    """Watermarks and graces of the connection manager (SPEC §10.17); None: nothing closes a
    peer's duplicate or idle connections (as before it)."""


def peer_id_from_seed(seed: bytes) -> str:
    """The peer id (base58) that a host with `identity_seed=seed` will have."""
    if len(seed) != _SEED_BYTES:
        raise LocalProtocolError(f"identity seed must be {_SEED_BYTES} bytes, got {len(seed)}")
    return ID.from_pubkey(create_identity_from_seed(seed).public_key).to_base58()


class _DemoteFilter(logging.Filter):
    """Demotes libp2p's ERROR records for ordinary network events to DEBUG.

    A failed `new_stream` logs a multi-line ERROR although we raise it to the caller, and a
    peer that hangs up (or a host that stops) logs handshake and yamux ERRORs: both are normal
    life on a P2P mesh, not faults of this node.
    """

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_NOISY_ERRORS: Final = {
    "libp2p.host.basic_host": ("Failed to open stream to peer",),
    "libp2p.protocol_muxer.multiselect_client": ("MultiselectClient handshake:",),
    "libp2p.stream_muxer.yamux.yamux": ("Error in handle_incoming for peer",),
    # A peer that resets or stalls its AutoNAT request: libp2p logs an ERROR, often empty.
    "libp2p.host.autonat.autonat": ("Error handling AutoNAT stream",),
    # An AutoNAT server's dial-back ends after the security handshake, by design (autonat.py).
    "libp2p.network.swarm": ("fail to upgrade mux for peer",),
    # A client closes its reservation stream once reserved; the relay reads on and logs EOF.
    "libp2p.relay.circuit_v2.protocol": (
        "Error reading from hop stream",
        "Error sending status message",
    ),
}
_FILTERS: Final = {name: _DemoteFilter(prefixes) for name, prefixes in _NOISY_ERRORS.items()}


def _configure_libp2p_logging() -> None:
    """libp2p sets its logger to WARNING with propagate=False (stderr via lastResort); route it
    through the app's handlers instead and keep it at WARNING unless the app chose a level."""
    root = logging.getLogger("libp2p")
    root.propagate = True
    if root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    # auto_connector forces INFO on import; it logs every check at INFO.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    for name, log_filter in _FILTERS.items():
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)


class _LibP2PStream:
    """`RawStream` over a libp2p stream; its coroutines run on the trio thread."""

    def __init__(
        self,
        stream: INetStream,
        paths: _ConnectionTracker | None,
        lazy: LazyOpening | None = None,
        held: bytes = b"",
    ) -> None:
        self._stream = stream
        self._lazy = lazy
        """A lazy opening's negotiation, left to the first write and read (SPEC §10.1)."""
        self._held = held
        """Our header and echo to a lazy opener, held for the first write or the close."""
        self.connection: INetConn | None = getattr(stream, "swarm_conn", None)
        """The connection the stream runs on (None: libp2p did not say)."""
        self.path: str | None = None
        """How that connection reaches the peer, named as `P2PHost.peer_paths` names it: as
        `paths` counted it. A connection has one path for its life (an upgrade is another
        connection), and reading it afresh at each stream open cost the trio thread ~6 µs on a
        direct connection (its addresses parsed), a lookup ~0.4 µs."""
        if self.connection is not None:
            known = _path_of(self.connection) if paths is None else paths.path_of(self.connection)
            self.path = _path_name(known)

    async def read(self, max_bytes: int) -> bytes:
        try:
            if self._lazy is not None:
                await self._lazy.before_read()
            return await self._stream.read(max_bytes)
        except StreamEOF:
            return b""
        except StreamError as exc:
            raise StreamClosed(f"stream read failed: {exc!r}") from exc
        except ProtocolNotSupportedError as exc:  # as `open_stream` tells it, one read later
            raise ProtocolNotSpoken(f"{exc} ({self._stream.get_protocol()})") from exc
        except MultiselectClientError as exc:
            if _ended_unanswered(exc):  # no answer, just an end: the connection closed under it
                raise StreamClosed(f"stream ended during lazy negotiation: {exc}") from exc
            raise StreamRefused(f"lazy negotiation failed: {exc}") from exc

    async def write(self, data: bytes) -> None:
        if self._lazy is not None:
            data = self._lazy.first_write(data)
        data, self._held = self._held + data, b""
        try:
            await self._stream.write(data)
        except StreamError as exc:
            raise StreamClosed(f"stream write failed: {exc!r}") from exc

    async def close(self) -> None:
        try:
            if self._held:  # no answer written: the echo alone, or the opener reads a refusal
                await self.write(b"")
            await self._stream.close()
        except StreamError as exc:
            raise StreamClosed(f"stream close failed: {exc!r}") from exc

    async def reset(self) -> None:
        with contextlib.suppress(StreamError):
            await self._stream.reset()


RECONCILE_S: Final = 1.0
"""How often the connections counted are checked against the ones libp2p lists."""


class _ConnectionReport(Protocol):
    def __call__(
        self, peer: str, delta: int, ip: str | None, path: str | None, closed: str | None
    ) -> None:
        """A connection of `peer` counted in (`delta` 1) or out (-1, with why it `closed`)."""
        ...


class _ConnectionTracker(INotifee):
    """Mirrors the set of connected peers to asyncio (counted per connection), and gives every
    stream the swarm adds the yamux rules: credit in half windows, whole writes (`node.p2p.yamux`,
    SPEC §10.1).

    libp2p's `connected`/`disconnected` calls alone do not keep the count: it notifies a close
    at its end, after awaits, so a close cancelled on the way never reports, and it drops a
    connection from its list without closing it or notifying (a second one to the same peer,
    over `max_connections_per_peer`). Such a peer stayed listed as connected for good, e.g. a
    banned peer that kept dialling (SPEC §11.6). So the count is also set right every
    `RECONCILE_S` from libp2p's own list of open connections, which is the truth.

    A connection we close is marked with our reason first (`closing`), so that each one counted
    out is reported with why it closed: ours, or `CLOSED_BY_PEER`.

    State (trio thread): each counted connection's path as it was when it was counted, and the
    reasons of those we are closing.
    """

    def __init__(
        self,
        network: INetwork,
        report: _ConnectionReport,
        admits: Callable[[INetConn], bool] = lambda _conn: True,
    ) -> None:
        self._network = network
        self._report = report
        self._admits = admits
        self._turned_away: set[INetConn] = set()
        """Closed past their peer's budget, never counted (until libp2p no longer lists them)."""
        self._closing: dict[INetConn, str] = {}
        self._trimmed: weakref.WeakSet[INetConn] = weakref.WeakSet()
        """Unlisted by libp2p's trim (`name_trims`); weak: some are never counted in or out."""
        # A connection's path is read once: py-libp2p answers a connection's transport
        # addresses from the peerstore when it has none of its own, and a relayed circuit's
        # carrier can be gone by the time it closes, so read again at the close it could name
        # another path, and the path it was counted under would stay in `peer_paths` forever.
        self._paths: dict[INetConn, str | None] = {}

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        # Awaited by the swarm before the stream reaches its opener or handler, so before its
        # first read; libp2p's own streams too (kad-dht walks, gossipsub, identify), which
        # otherwise sent a WINDOW_UPDATE after nearly every read: on a group's creator walking
        # the DHT for absent members, half the socket writes of an idle minute.
        adopt_yamux_stream(getattr(stream, "muxed_stream", None))
        stream_opened(stream)  # the census, in the order streams open (SPEC §20.6)
        quicken_stream(stream)  # free locks cost no scheduler pass (`quick_locks`)

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        if conn not in self._paths and conn not in self._turned_away:  # else met by `_reconcile`
            self._meet(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        if conn in self._paths:  # else never counted, or counted out by `_reconcile`
            self._count_out(conn)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Reconcile for the lifetime of the block."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconcile_forever)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _reconcile_forever(self) -> None:
        while True:
            await trio.sleep(RECONCILE_S)
            self._reconcile()

    def _reconcile(self) -> None:
        listed = {conn for conn in self._network.get_connections() if not conn.is_closed}
        for conn in [conn for conn in self._paths if conn not in listed]:
            self._count_out(conn)
        self._turned_away &= listed
        for conn in listed - self._paths.keys() - self._turned_away:
            self._meet(conn)  # listed before libp2p announced it: judged here, once

    def closing(self, conn: INetConn, reason: str) -> None:
        """We are about to close `conn` for `reason`; a connection not counted is not marked
        (nothing would take the mark)."""
        if conn in self._paths:
            self._closing.setdefault(conn, reason)

    def name_trims(self, swarm: Swarm) -> None:
        """Count libp2p's trims of a peer's extra connections as ours (`CLOSED_TRIMMED`). The
        mark goes on as the trim unlists them: their close runs later, in a task of its own,
        and `_reconcile` may count them out before it; and the one trimmed may be the new one,
        which the swarm announces after (so not counted yet: `closing` would not mark it)."""
        trim = swarm._trim_connections

        def trim_named(peer_id: ID) -> None:
            listed = list(swarm.connections.get(peer_id, ()))
            trim(peer_id)
            kept = swarm.connections.get(peer_id, ())
            self._trimmed.update(conn for conn in listed if conn not in kept)

        swarm._trim_connections = trim_named  # type: ignore[method-assign]

    def path_of(self, conn: INetConn) -> str | None:
        """`_path_of(conn)` as it was when `conn` was counted (read afresh if not yet)."""
        try:
            return self._paths[conn]
        except KeyError:  # a stream on it before its `connected` ran
            return _path_of(conn)

    def _meet(self, conn: INetConn) -> None:
        """A connection seen for the first time, by `connected` or `_reconcile`, whichever
        comes first: each one passes the budget once."""
        if not self._admits(conn):  # churn past the budget, being closed: no count, no hello
            self._turned_away.add(conn)
            return
        self._count_in(conn)

    def _count_in(self, conn: INetConn) -> None:
        watch_reads(conn.muxed_conn)  # its liveness under load (`answers_ping`)
        quicken_connection(conn.muxed_conn)
        lean_frame_writes(conn.muxed_conn)
        path = self._paths[conn] = _path_of(conn)
        self._report(conn.muxed_conn.peer_id.to_base58(), 1, remote_ip(conn), path, None)

    def _count_out(self, conn: INetConn) -> None:
        reason = self._closing.pop(conn, None) or (
            CLOSED_TRIMMED if conn in self._trimmed else CLOSED_BY_PEER
        )
        log.info(
            "connection to %s (%s, %s) closed: %s",
            conn.muxed_conn.peer_id.to_base58()[-8:],
            getattr(conn, "direction", "?"),
            self._paths.get(conn) or DIRECT_PATH,
            reason,
        )
        self._report(conn.muxed_conn.peer_id.to_base58(), -1, None, self._paths.pop(conn), reason)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class P2PHost:
    """One node's libp2p host. Use as `async with P2PHost(config) as host:`."""

    def __init__(self, config: HostConfig) -> None:
        if len(config.identity_seed) != _SEED_BYTES:
            raise LocalProtocolError(f"identity seed must be {_SEED_BYTES} bytes")
        self.config = config
        self.peer_id = peer_id_from_seed(config.identity_seed)
        """This host's peer id (base58), fixed by the identity seed."""
        self.listen_addrs: list[str] = []
        """Where peers reach us, with `/p2p/<id>`: our `/p2p-circuit` addresses while we hold
        relay reservations (SPEC §10.7), then the listen addresses (ports resolved, `0.0.0.0`
        expanded per interface); set by `__aenter__`."""
        self._bridge = TrioThread(name=f"libp2p-{self.peer_id[-8:]}", on_loop=config.trio_on_loop)
        self._dial_answers = DialAnswers()
        self._tasks: asyncio.TaskGroup | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, StreamHandler] = {}
        self._peers: dict[str, int] = {}
        self._peer_waiters: dict[str, asyncio.Event] = {}
        self._on_connection: ConnectionHandler | None = None
        self._admits: PeerFilter = lambda _peer: True
        self._siblings: PeerFilter = lambda _peer: False
        self._refused: RefusalHandler = _refuse_nothing
        self._remote_ips: dict[str, str] = {}
        self._paths: dict[str, dict[str | None, int]] = {}
        self._reserving = False
        self._reserve_again = False
        self._reserve_task: asyncio.Task[None] | None = None
        self._relayed_via: dict[str, str] = {}
        self._on_addresses: Callable[[], None] = lambda: None
        self._direct_addrs: list[str] = []
        self._relay = CircuitRelayLayer(
            hop=config.relay_service, limits=config.relay_limits, report=self._report_relayed
        )
        self._punch = HolePunchLayer(
            report=self._report_punch, unilateral_dial_s=config.unilateral_dial_s
        )
        self._webrtc = WebRtcLayer(
            report=self._report_webrtc,
            punch_ended=self._punch.punch_ended,
            refused=functools.partial(self._stream_refused, protocol=CHARGED_WEBRTC_STREAMS),
            garbled=functools.partial(self._garbled, protocol=SIGNALING_PROTOCOL),
            stun_servers=config.stun_servers,
            retry_after_s=config.webrtc_retry_after_s,
            upgrade_timeout_s=config.webrtc_upgrade_timeout_s,
        )
        self._upnp = UpnpLayer(report=self._report_mapped)
        self._mapped_addrs: list[str] = []
        self._advertised: tuple[tuple[str, ...], list[multiaddr.Multiaddr]] | None = None
        """What `_advertised_addrs` answered once listening, for the mapped addresses then."""
        self.hole_punches = HolePunchCounts()
        """Hole punches tried and those that went direct, per transport (SPEC §10.9)."""
        self.connections_closed: dict[str, int] = {}
        """Connections that closed since the start, per reason (`CLOSED_UNANSWERED`,
        `CLOSED_REFUSED`, `CLOSED_TRIMMED`: ours; `CLOSED_BY_PEER`) (SPEC §10.13); on asyncio."""
        self.inbound = InboundLedger(config.inbound)
        """Inbound streams open and bytes held for partial frames (SPEC §10.4)."""
        self._stream_slots = PerPeerStreamSlots(config.inbound, self._slots_exceeded)
        self._connections = ConnectionBudget(
            config.inbound,
            functools.partial(self._stream_refused, protocol=CHARGED_CONNECTIONS),
            config.clock,
        )
        self._read_limits = ReadLimits(
            budget=self.inbound,
            frame_timeout_s=config.inbound.frame_timeout_ms / 1000,
            idle_timeout_s=config.inbound.idle_timeout_ms / 1000,
        )
        self._closing = False
        self._wire = WireCounts()
        self._gossip = GossipLayer(
            bridge=self._bridge,
            call=self._call,
            peer_id=self.peer_id,
            message_id=config.message_id,
            subscription_queue_size=config.subscription_queue_size,
            degree=config.gossip_degree,
            on_garbled=functools.partial(self._garbled, protocol=CHARGED_GOSSIP),
            on_churn=functools.partial(self._stream_refused, protocol=CHARGED_GOSSIP),
            wire=self._wire,
        )
        self._dht: DhtLayer | None = None
        self._jobs = PeriodicJobs()
        """AutoNAT's and kad's periodic jobs, counted and metered apart (SPEC §20.6)."""
        if (config.dht_validate is None) != (config.dht_select is None):
            raise LocalProtocolError("dht_validate and dht_select go together")
        if config.dht_validate is not None and config.dht_select is not None:
            self._dht = DhtLayer(
                call=self._call,
                validate=config.dht_validate,
                select=config.dht_select,
                refused=functools.partial(self._garbled, protocol=KAD_PROTOCOL),
                jobs=self._jobs,
            )
        self.reachability = Reachability.UNKNOWN
        """AutoNAT's latest verdict on whether peers elsewhere can dial us (SPEC §10.6)."""
        self._autonat = AutoNatLayer(
            report=self._report_reachability,
            advertised=lambda: list(config.announce_addrs or self._direct_addrs),
            confirmations=config.autonat_confirmations,
            interval_s=config.autonat_interval_s,
            jobs=self._jobs,
            periodic=config.autonat_checks,
            loopback=config.autonat_loopback,
        )
        # Owned by the trio thread:
        self._host: IHost | None = None
        self._gate: PrefixGate | None = None
        self._tracker: _ConnectionTracker | None = None  # trio thread
        self._manager: ConnectionManager | None = None  # trio thread
        self._kept: frozenset[str] = frozenset()
        """Peers whose connections the manager never closes as idle (`set_kept`)."""

    # ---- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> P2PHost:
        _configure_libp2p_logging()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        try:
            await self._bridge.start(self._service)
        except BaseException as exc:
            await self._tasks.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        for addr in self.config.bootstrap:
            self._bridge.run_sync_soon(self._bridge.spawn, self._dial_in_background, addr)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop handlers, end subscriptions, close connections and join the trio thread."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(HostClosed):  # first: a handler's reset can be what is stuck
            self._bridge.run_sync_soon(self._spawn_socket_closer)
        for task in self._handler_tasks:
            task.cancel()
        if self._reserve_task is not None:
            # A pass waits up to 10 s for a relay's identify, then its answer: a stop waited
            # it out (IDENTIFY_WAIT_S, RESERVE_TIMEOUT_S); a reservation is of no use now.
            self._reserve_task.cancel()
        try:
            if self._tasks is not None:
                await self._tasks.__aexit__(None, None, None)
        finally:
            self._gossip.end_subscriptions()
            await self._bridge.stop()

    async def wait_failed(self) -> P2PError:
        """Wait until the trio run ends unasked (a task's error escaped py-libp2p and ended
        the run: the host then delivers nothing); the error, its cause chained. Never returns
        when `aclose` ends the run; the caller cancels the wait (SPEC §11.8.5)."""
        ended = await self._bridge.wait_ended()
        if ended is None or self._closing:
            await asyncio.Future()  # stopped as asked: no failure to report
        failure = P2PError(f"libp2p host {self.peer_id[-8:]} ended unasked: {_leaves(ended)}")
        failure.__cause__ = ended
        return failure

    def _spawn_socket_closer(self) -> None:
        """Trio thread, at stop: close the sockets left after `STOP_ABORT_S` (scaled with
        `HostConfig.stop_grace_s`). A system task, not one of the work nursery: a task stuck
        there (a bridge call such as a stream handler's reset, awaited by `aclose`) is what it
        ends."""
        trio.lowlevel.spawn_system_task(self._close_sockets_later, name="close sockets at stop")

    async def _close_sockets_later(self) -> None:
        # cancelled when the thread's run ends first
        await trio.sleep(STOP_ABORT_S / STOP_GRACE_S * self.config.stop_grace_s)
        host = self._host
        if host is not None:
            log.info("host %s still stopping: closing its sockets", self.peer_id[-8:])
            try:
                _close_sockets(host)
            except Exception:  # a system task's error would end the whole run
                log.warning("closing the sockets of %s failed", self.peer_id, exc_info=True)

    @asynccontextmanager
    async def _service(self) -> AsyncIterator[None]:
        """Runs on the trio thread: build the host, listen, run pubsub; close all on exit."""
        key_pair = create_identity_from_seed(self.config.identity_seed)
        # Noise only: new_host's default also offers TLS, SECIO and plaintext (libp2p-notes).
        security = {
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=create_x25519_key_pair().private_key
            )
        }
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen_addrs]
        host = new_host(
            key_pair=key_pair,
            sec_opt=security,
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=listen,
            # py-libp2p's mDNS blocks the trio thread (and with trio on the loop, the loop):
            # `announced_on_lan` runs the same off it.
            enable_mDNS=False,
            # QUIC (TLS 1.3 inside, its own streams) only where a listen address asks for it.
            enable_quic=any("/quic" in a for a in self.config.listen_addrs),
            # One connection per peer skips the 250 ms dial fallback. min/low 0 did not keep
            # libp2p's auto-connector from dialling every peerstore entry (its target is the
            # midpoint of low and high): `dial_no_peerstore` does.
            connection_config=ConnectionConfig(
                max_connections_per_peer=1,
                min_connections=0,
                low_watermark=0,
                outbound_stream_protocol_negotiation_timeout=NEGOTIATION_S,
                inbound_stream_protocol_negotiation_timeout=NEGOTIATION_S,
            ),
            resource_manager=self._stream_slots,
            # What identify and AutoNAT tell peers: never 0.0.0.0 (a peer would dial itself).
            addrs_factory=self._advertised_addrs,
        )
        if isinstance(host, BasicHost):  # before any handler is set: it takes over the table
            pipeline_negotiation(host)
        network = host.get_network()
        if isinstance(network, Swarm):  # refuse banned prefixes before their handshake
            read_plain_frames_lean(network)  # plain DATA frames without py-libp2p's loop
            # (new_host takes no retry_config: the swarm's is set in its place)
            network.retry_config = RetryConfig(initial_delay=self.config.dial_retry_delay_s)
            gate = network.connection_config
            network.connection_gate = self._gate = PrefixGate(
                allow_list=gate.allow_list, deny_list=gate.deny_list
            )
            close_peer_keeping_newer(network)
            dial_no_peerstore(network)  # the app picks its peers (SPEC §10.17)
            self._dial_answers.install(network)
        track(network, self._wire)
        keep_addrs(host, self._kept_advertised)
        task_parents.install()
        eof_reads.install()
        self._gossip.build(host)
        self._autonat.build(host)
        self._relay.build(host)
        self._punch.build(host)
        if self.config.webrtc:
            self._webrtc.build(host)
        if self._dht is not None:
            self._dht.build(host)
        tracker = self._tracker = _ConnectionTracker(
            host.get_network(), self._report_connection, self._admit_connection
        )
        if isinstance(network, Swarm):
            tracker.name_trims(network)
        host.get_network().register_notifee(tracker)
        trim = self.config.connection_trim
        if trim is not None:
            self._manager = ConnectionManager(
                host.get_network(),
                own_peer=self.peer_id,
                policy=trim,
                protected=self._protected_peers,
                close=self._close_trimmed,
                clock=self.config.clock,
            )
            host.get_network().register_notifee(self._manager)
        managing = contextlib.nullcontext() if self._manager is None else self._manager.running()
        if self.config.dial_from is not None:
            _dial_from(host.get_network(), self.config.dial_from)
        self._host = host
        token = trio.lowlevel.current_trio_token()

        def on_mdns_peer(info: PeerInfo) -> None:  # zeroconf's thread: hop to ours
            if info.peer_id != host.get_id():
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._spawn_connect_info, info)

        if self.config.enable_mdns:
            peerDiscovery.register_peer_discovered_handler(on_mdns_peer)
        try:
            async with host.run(listen):
                try:
                    dht_running = (
                        contextlib.nullcontext() if self._dht is None else self._dht.running()
                    )
                    async with (
                        self._gossip.running(),
                        dht_running,
                        self._autonat.running(),
                        self._relay.running(),
                        self._punch.running(),
                        self._webrtc.running(),
                        tracker.running(),
                        managing,
                    ):
                        try:
                            listening = [
                                f"{a}/p2p/{self.peer_id}" for a in host.get_transport_addrs()
                            ]
                            self._direct_addrs = dialable_addrs(listening)
                            self.listen_addrs = list(self._direct_addrs)
                            upnp = (
                                self._upnp.running(lambda: _transport_addrs(host))
                                if self.config.upnp
                                else contextlib.nullcontext()
                            )
                            mdns = (
                                announced_on_lan(host)
                                if self.config.enable_mdns
                                else contextlib.nullcontext()
                            )
                            async with upnp, mdns:
                                yield
                        finally:
                            # Connections go first: an RPC arriving after pubsub's service
                            # stopped crashes the whole host ("Nursery is closed").
                            with trio.CancelScope(shield=True):
                                await _close_connections(host, self.config.stop_grace_s)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._close_host(host)
        finally:
            self._gossip.release()
            if self._dht is not None:
                self._dht.release()
            if self.config.enable_mdns:
                peerDiscovery.unregister_peer_discovered_handler(on_mdns_peer)
            self._host = None

    def _advertised_addrs(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """libp2p's addrs factory (trio thread): the announce addresses if set, else the
        listen addresses with `0.0.0.0` expanded per interface (what identify tells peers)."""
        if self.config.announce_addrs:
            return [multiaddr.Multiaddr(a) for a in self.config.announce_addrs]
        # Our listen addresses only: an address a peer observed us at is, behind a NAT, a
        # mapping that drops new connections (each dial of it waits out libp2p's 10 s).
        kept = self._kept_advertised()
        if kept is not None:
            return list(kept[1])
        mapped = tuple(self._mapped_addrs)
        host = self._host
        listening = candidates if host is None else host.get_transport_addrs()
        expanded = dialable_addrs([str(a) for a in listening])
        plain = [a.rsplit("/p2p/", 1)[0] for a in mapped]
        addrs = [multiaddr.Multiaddr(a) for a in plain + expanded]
        if host is not None and self._direct_addrs:  # listening: its ports are known for good
            # Kept: pubsub asks on every RPC it sends (the signed peer record it attaches),
            # and the sockets' names and the addresses' parsing were 1-3 % of a 50-node
            # mesh's busy time.
            self._advertised = (mapped, addrs)
        return list(addrs)

    def _kept_advertised(self) -> tuple[tuple[str, ...], list[multiaddr.Multiaddr]] | None:
        """What `_advertised_addrs` kept, while the mapped addresses are the ones it had."""
        kept = self._advertised
        return kept if kept is not None and kept[0] == tuple(self._mapped_addrs) else None

    async def _close_host(self, host: IHost) -> None:
        """`host.run()` alone leaves listener and outbound sockets open (3 fds per 2-host
        cycle, libp2p-notes): close the host explicitly."""
        await _close_connections(host, self.config.stop_grace_s)
        try:
            await host.close()
        except Exception:
            log.warning("closing libp2p host %s failed", self.peer_id, exc_info=True)

    def _report_reachability(self, now: Reachability) -> None:
        self._bridge.to_asyncio(self._apply_reachability, now)
        if now is Reachability.PRIVATE:
            self._spawn_reserve()

    def _spawn_reserve(self) -> None:  # trio thread
        if len(self._relay.relayed_addrs) < self.config.relay_reservations:
            self._bridge.to_asyncio(self._schedule_reserve)

    def _schedule_reserve(self) -> None:
        if self._closing or self._tasks is None:
            return
        if self._reserving:  # the pass in flight may have listed its candidates already
            self._reserve_again = True
            return
        self._reserving = True
        self._reserve_task = self._tasks.create_task(self._reserve_in_background())

    async def _reserve_in_background(self) -> None:
        """One pass, then another for each batch of triggers that came during it (a relay
        that connected after the pass listed its candidates was else never reserved on)."""
        try:
            self._reserve_again = True
            while self._reserve_again and not self._closing:
                self._reserve_again = False
                try:
                    await self.reserve_relays()
                except (P2PError, HostClosed) as exc:
                    log.info("relay reservation failed: %r", exc)
        finally:
            self._reserving = False

    async def reserve_relays(self) -> list[str]:
        """Reserve on connected relays, in `relay_rank` order, until `relay_reservations` are
        held (a private node does this by itself); returns the relays' peer ids (SPEC §10.7)."""
        candidates = self.connected_peers()
        if self.config.relay_rank is not None:
            try:
                ranked = await self.config.relay_rank(candidates)
            except Exception:  # a ranking that fails must not keep us unreachable
                log.warning("ranking relays failed; taking them as connected", exc_info=True)
            else:
                candidates = ranked + [c for c in candidates if c not in ranked]
        wanted = self.config.relay_reservations
        return await self._call(
            P2PError, "relay reservation", self._relay.reserve, candidates, wanted
        )

    def _report_punch(self, transport: str, went_direct: bool) -> None:
        self._bridge.to_asyncio(self.hole_punches.record, transport, went_direct)

    def _report_webrtc(self, peer: str, connected: bool) -> None:
        self._report_punch(WEBRTC_PATH, connected)

    async def upgrade_to_webrtc(self, peer_id: str) -> bool:
        """Offer WebRTC to a connected peer now (as after a failed hole punch, SPEC §10.11);
        True if a WebRTC connection to it carries new streams."""
        return await self._call(
            P2PError, f"WebRTC to {peer_id}", self._webrtc.upgrade, ID.from_base58(peer_id)
        )

    def _report_relayed(self, relayed: dict[str, str]) -> None:
        self._bridge.to_asyncio(self._apply_relayed, dict(relayed))

    def _apply_relayed(self, relayed: dict[str, str]) -> None:
        log.info("circuit addresses: %s", sorted(relayed.values()))
        self._relayed_via = relayed
        self._apply_addresses()

    def _report_mapped(self, mapped: list[str]) -> None:
        """On the trio thread: the gateway forwards these to us (UPnP, SPEC §10.12); they go
        first among our direct addresses, and AutoNAT checks again."""
        self._mapped_addrs = [f"{a}/p2p/{self.peer_id}" for a in mapped]
        others = [a for a in self._direct_addrs if a not in self._mapped_addrs]
        self._direct_addrs = self._mapped_addrs + others
        self._autonat.addresses_changed()
        self._bridge.to_asyncio(self._apply_addresses)

    def _apply_addresses(self) -> None:
        # Circuit addresses first while AutoNAT finds us private (we reserved because of it), so
        # a peer elsewhere does not wait out a dial timeout on each direct address before them;
        # once public (a port mapping came, SPEC §10.12) the direct ones answer, and go first.
        relayed = list(self._relayed_via.values())
        if self.reachability is Reachability.PUBLIC:
            self.listen_addrs = self._direct_addrs + relayed
        else:
            self.listen_addrs = relayed + self._direct_addrs
        self._on_addresses()

    def relays(self) -> list[str]:
        """Peer ids of the relays we hold reservations on (as last reported)."""
        return sorted(self._relayed_via)

    def wire(self) -> dict[str, Any]:
        """What we wrote to peers since the start, per protocol (`wire_counts`: payload
        bytes and writes), the gossip RPCs py-libp2p dropped for a full peer queue, and the
        gossip router's counts (`MeshCounts`: ids offered and wanted, mesh sizes; SPEC
        §20.6) and the periodic jobs' runs and CPU (`PeriodicJobs`); from the asyncio side."""
        return {
            **self._wire.snapshot(),
            "gossip_rpcs_dropped": self._gossip.rpcs_dropped(),
            "gossip": asdict(self._gossip.mesh_counts()),
            "periodic": self._jobs.snapshot(),
        }

    def peer_paths(self) -> dict[str, list[str]]:
        """Each connected peer -> how we reach it: `"direct"`, `"webrtc"` and/or the relays'
        peer ids."""
        return {peer: self.paths_of(peer) for peer in self._paths}

    def paths_of(self, peer_id: str) -> list[str]:
        """`peer_paths()` of one peer ([] when not connected)."""
        return sorted(_path_name(relay) for relay in self._paths.get(peer_id, ()))

    def _apply_reachability(self, now: Reachability) -> None:
        self.reachability = now
        if self._relayed_via:  # which addresses go first
            self._apply_addresses()

    def _report_connection(
        self, peer: str, delta: int, ip: str | None, path: str | None, closed: str | None
    ) -> None:
        relay = None if path == WEBRTC_PATH else path
        if delta > 0 and relay is not None:  # DCUtR: go direct where the NATs allow
            self._punch.relayed_connection_opened(peer)
            if self.config.webrtc:  # else WebRTC, once DCUtR has had its window
                self._webrtc.relayed_connection_opened(peer)
        elif delta > 0 and path is None and self.config.webrtc:  # direct beats WebRTC
            self._webrtc.direct_connection_opened(peer)
        reserve = False
        if delta > 0:  # a new peer may serve AutoNAT, or be a relay we want
            self._autonat.peer_connected()
            reserve = self._autonat.reachability is Reachability.PRIVATE
        elif peer in self._relay.relayed_addrs and path is None:  # our direct one to it
            self._relay.forget(peer)
            reserve = True
        self._bridge.to_asyncio(self._apply_path, peer, delta, path)
        if delta > 0 and self._dht is not None:  # a new peer may serve the DHT
            with contextlib.suppress(HostClosed):
                self._bridge.spawn(self._dht.add_peer, ID.from_base58(peer))
        self._bridge.to_asyncio(self._apply_connection, peer, delta, ip)
        if closed is not None:
            self._bridge.to_asyncio(self._count_closed, closed)
        if reserve:  # after `_apply_connection` (FIFO): the pass lists this peer as connected
            self._spawn_reserve()

    def _count_closed(self, reason: str) -> None:
        self.connections_closed[reason] = self.connections_closed.get(reason, 0) + 1

    def _apply_path(self, peer: str, delta: int, relay: str | None) -> None:
        paths = self._paths.setdefault(peer, {})
        paths[relay] = paths.get(relay, 0) + delta
        if paths[relay] <= 0:
            del paths[relay]
        if not paths:
            del self._paths[peer]

    def _apply_connection(self, peer: str, delta: int, ip: str | None) -> None:
        before = self._peers.get(peer, 0)
        count = before + delta
        if ip is not None:
            self._remote_ips[peer] = ip
        if count > 0:
            self._peers[peer] = count
            waiter = self._peer_waiters.pop(peer, None)
            if waiter is not None:
                waiter.set()
        else:
            self._peers.pop(peer, None)
            self._remote_ips.pop(peer, None)
        if self._on_connection is not None and (before > 0) != (count > 0):
            self._on_connection(peer, count > 0)
        elif delta > 0 and not self._admits(peer):
            # A refused peer that dialled again while its last connection was still closing
            # has two for a moment: no first-connection report comes for the second one, so
            # the filter closes it here, or it would stay open once the first is gone.
            self.disconnect_nowait(peer)

    def _require_host(self) -> IHost:
        if self._host is None:
            raise HostClosed("libp2p host is not running")
        return self._host

    async def _call(
        self, error: type[P2PError], what: str, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """Run `fn` on the trio thread; libp2p exceptions become `error` (cause chained)."""
        if self._closing:
            raise HostClosed(f"{what}: host is closing")
        try:
            return await self._bridge.run(fn, *args)
        except HearthError:
            raise
        except Exception as exc:  # with its causes: libp2p's top error rarely says why
            raise error(f"{what}: {describe_error(exc)}") from exc

    # ---- connections ------------------------------------------------------------------------

    async def connect(
        self, address: str, *, retry_now: bool = False, answer_s: float | None = None
    ) -> str:
        """Connect to a peer at `address` (a multiaddr ending in `/p2p/<id>`).

        Args:
            retry_now: dial even if libp2p's negative cache says every address of the peer
                failed within the last minute: for callers with a backoff of their own (the
                outbox's probes), whom a peer back from a partition must not wait a minute for.
            answer_s: cut the dial if `address` has not answered within it (a direct TCP
                address: its connection opened; any other: the dial ended), else give its
                handshakes `dial_answers.AFTER_ANSWER_S` more (`DialAnswers`).

        Returns:
            The peer id (base58).

        Raises:
            DialFailed: bad address, refused, or the Noise handshake failed.
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            raise DialFailed(f"bad peer address {address!r}: {exc}") from exc
        if "/p2p-circuit/" in address:
            # The swarm's own dial expects a raw connection from every transport; the circuit
            # transport hands back an upgraded one, so it dials itself (SPEC §10.7).
            async with asyncio.timeout(answer_s):
                await self._call(DialFailed, f"connect to {address}", self._relay.dial, address)
        else:
            await self._call(
                DialFailed,
                f"connect to {address}",
                self._connect_on_trio,
                info,
                retry_now,
                answer_s,
            )
        return info.peer_id.to_base58()

    async def _connect_on_trio(
        self, info: PeerInfo, retry_now: bool, answer_s: float | None = None
    ) -> None:
        host = self._require_host()
        network = host.get_network()
        if retry_now and isinstance(network, Swarm):
            network.unblock_peer(info.peer_id)
        await self._forget_closed_connections(info.peer_id)
        if answer_s is None:
            await host.connect(info)
            return
        with self._dial_answers.bounded(info.addrs[0], answer_s) as bound:
            await host.connect(info)
        if bound.cancelled_caught:
            raise DialFailed(f"{info.addrs[0]} did not answer, or its handshakes took too long")

    async def _forget_closed_connections(self, peer: ID) -> None:
        """Drop what libp2p still lists for `peer` when every connection of it is closed.

        While one is listed, libp2p's connect returns at once and a stream open fails with "no
        valid connections" without dialling: the peer stayed out of reach until it dialled us,
        for minutes after kills and a partition (`simulate` R1, SPEC §11.5.2)."""
        network = self._require_host().get_network()
        if not isinstance(network, Swarm):
            return
        listed = network.get_connections(peer)
        if listed and all(connection.is_closed for connection in listed):
            log.info("connections to %s are closed but still listed: dropped", peer)
            await network.close_peer(peer)

    def _spawn_connect_info(self, info: PeerInfo) -> None:
        with contextlib.suppress(HostClosed):
            self._bridge.spawn(self._connect_quietly, info)

    async def _connect_quietly(self, info: PeerInfo) -> None:
        host = self._host
        if host is None or info.peer_id in host.get_connected_peers():
            return
        try:
            await host.connect(info)
        except Exception as exc:
            log.info("auto-connect to %s failed: %r", info.peer_id, exc)

    async def _dial_in_background(self, address: str) -> None:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            log.warning("bad bootstrap address %r: %r", address, exc)
            return
        await self._connect_quietly(info)

    async def add_peer_address(self, address: str) -> str:
        """Remember where a peer listens (`.../p2p/<id>`) without dialling; returns its id."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            raise DialFailed(f"bad peer address {address!r}: {exc}") from exc
        await self._call(DialFailed, "add peer address", self._add_addrs_on_trio, info)
        return info.peer_id.to_base58()

    async def _add_addrs_on_trio(self, info: PeerInfo) -> None:
        self._require_host().get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)

    def set_address_handler(self, handler: Callable[[], None]) -> None:
        """Call `handler` on asyncio when `listen_addrs` change (a relay reservation came or
        went, SPEC §10.7)."""
        self._on_addresses = handler

    def set_connection_handler(self, handler: ConnectionHandler) -> None:
        """Call `handler` on asyncio when a peer gets its first connection or loses its last.

        Every new connection counts however it came (dialled, accepted, mDNS, bootstrap); with
        at most one connection per peer, each reconnect is one call. An extra connection of a
        peer the peer filter refuses is closed by the host itself (`_apply_connection`).
        """
        self._on_connection = handler

    def set_peer_filter(self, admits: PeerFilter) -> None:
        """Reset unread every inbound stream from a peer `admits` refuses (asked on asyncio)."""
        self._admits = admits

    def set_protected(self, protected: PeerFilter) -> None:
        """Exempt the peers `protected` names (our user's other homes) from the connection
        budget (SPEC §11.6.6) and gossip's greeting-again budget (§14.3); asked on the trio
        thread, so it must be safe to call there."""
        self._connections.protect(protected)
        self._gossip.protect(protected)
        self._siblings = protected

    def set_kept(self, peers: frozenset[str]) -> None:
        """The peers whose connections are never closed as idle (SPEC §10.17): our groups'
        homes and our siblings; replaced whole (from asyncio; the trio thread reads it)."""
        self._kept = peers

    def _protected_peers(self, connected: frozenset[str]) -> frozenset[str]:
        """Trio thread, for the connection manager: of `connected`, the peers it keeps (SPEC
        §10.17): `set_kept`'s, our siblings, the relays we hold a reservation on, our gossip
        meshes' peers and the first few connected ones of each DHT bucket."""
        kept = set(self._kept) | set(self._relay.relayed_addrs) | self._gossip.mesh_peers()
        kept.update(peer for peer in connected if self._siblings(peer))
        if self._dht is not None and self.config.connection_trim is not None:
            per_bucket = self.config.connection_trim.dht_per_bucket
            kept |= dht_kept(self._dht.buckets(), connected, per_bucket)
        return frozenset(kept & connected)

    async def _close_trimmed(self, conn: INetConn, reason: str) -> None:
        self._mark_closing([conn], reason)
        await _close_within_abort([conn], conn.close)

    def _garbled(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None:
        """From the trio thread: a peer's gossip RPC, kad answer or request, or WebRTC offer
        or answer cannot be right (a whole frame, §11.6)."""
        self._bridge.to_asyncio(self._report_refused, peer, error, protocol)

    def _report_refused(self, peer: str, error: RemoteProtocolError, protocol: str) -> None:
        self._refused(peer, error, protocol=protocol)

    def set_refusal_handler(self, refused: RefusalHandler) -> None:
        """Report to `refused` each stream-level offence of a peer: a stream past its cap, or a
        `RemoteProtocolError` that a stream handler let out (SPEC §10.4, §11.6)."""
        self._refused = refused

    def libp2p_inbound_streams(self, peer_id: str) -> int:
        """Inbound streams of `peer_id` in all protocols, libp2p's own included (SPEC §10.4)."""
        return self._stream_slots.inbound_of(peer_id)

    async def check_reachability(self) -> Reachability:
        """Ask the connected AutoNAT servers now; returns (and records) the verdict."""
        return await self._call(P2PError, "AutoNAT check", self._autonat.check_once)

    def remote_ip(self, peer_id: str) -> str | None:
        """The IP address a connected peer's connection comes from (None if not known)."""
        return self._remote_ips.get(peer_id)

    def connected_peers(self) -> list[str]:
        """Peer ids with at least one open connection (as last reported by the trio thread)."""
        return sorted(self._peers)

    async def wait_connected(self, peer_id: str) -> None:
        """Wait until a connection to `peer_id` exists (dialled by anyone, e.g. mDNS)."""
        if peer_id in self._peers:
            return
        await self._peer_waiters.setdefault(peer_id, asyncio.Event()).wait()

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to `peer_id` (takes ~200 ms inside libp2p)."""
        await self._call(P2PError, f"disconnect {peer_id}", self._disconnect_on_trio, peer_id)

    async def _disconnect_on_trio(self, peer_id: str) -> None:
        await self._require_host().disconnect(ID.from_base58(peer_id))

    def ban_prefix(self, prefix: str, seconds: float, interval_s: float) -> None:
        """Refuse `prefix`'s new connections before their handshake for `seconds`, but one per
        `interval_s` (`node.p2p.prefix_gate`); returns at once."""
        with contextlib.suppress(HostClosed):
            self._bridge.run_sync_soon(self._ban_prefix, prefix, seconds, interval_s)

    def _ban_prefix(self, prefix: str, seconds: float, interval_s: float) -> None:
        if self._gate is not None:
            self._gate.ban(prefix, seconds, interval_s=interval_s)

    @property
    def refused_before_handshake(self) -> int:
        """Connections the prefix gate refused before their handshake."""
        return 0 if self._gate is None else self._gate.refused

    def connections_turned_away(self) -> int:
        """Connections closed past their peer's connection budget, before our hello."""
        return self._connections.turned_away

    def disconnect_nowait(self, peer_id: str) -> None:
        """Start closing every connection to `peer_id` and return at once; failures are logged.

        The closing runs in the trio thread's nursery, so the host's stop ends it.
        """
        self._start_nowait(self._disconnect_quietly, peer_id)

    def redial_nowait(self, peer_id: str) -> None:
        """Start closing every connection to `peer_id`, so the next stream dials afresh, unless
        WebRTC is all we have to it or a connection to it still answers a ping; return at once
        (SPEC §11.5.2).

        No dial makes a WebRTC connection again: only an upgrade of a relayed one does, so
        with the relay gone, closing it left the peer out of reach for good. A WebRTC path
        that died closes anyway once ICE consent lapses (about 30 s, SPEC §10.11).

        A connection that answers a yamux ping within `live_ping_s`, or reads anything from its
        peer meanwhile, carries bytes both ways: the peer is slow, not gone. Closing it under
        load (at 50 nodes on 2 cores a batch's ack took longer than its bound) cut every stream
        on it and made each home dial again, while the dead path this is for (a healed
        partition's connection, whose packets TCP still backs off) answers no ping and reads
        nothing.
        """
        self._start_nowait(self._redial, peer_id)

    def drop_connection_nowait(self, stream: FrameStream, *, unanswered: bool = False) -> None:
        """Start closing the connection `stream` runs on, so that the next stream to its peer
        takes another one or dials afresh (SPEC §11.5.2); return at once. The peer's other
        connections stay: a batch unanswered on a relayed circuit says nothing of a direct
        connection beside it. Never a WebRTC connection (no dial makes one again), nor one
        that still answers a ping (slow, not gone): see `redial_nowait`. `unanswered`: the
        caller's own ping (`stream_answers`) went unanswered just now; no second one."""
        raw = stream.raw
        if not isinstance(raw, _LibP2PStream) or raw.connection is None:
            return
        if raw.path == WEBRTC_PATH:
            log.info("%s: a stream over WebRTC failed; the connection is kept", stream.remote_peer)
            return
        close = self._close_unanswered if unanswered else self._close_unless_alive
        self._start_nowait(close, raw.connection)

    async def stream_answers(self, stream: FrameStream) -> bool:
        """Does the connection `stream` runs on answer a ping within `live_ping_s`, or read
        anything from its peer meanwhile or in the `live_ping_s` before: slow, not gone
        (SPEC §11.5.2)? False for a stream on no libp2p yamux connection (WebRTC) and on a
        host that is stopping.

        A read counts only within `live_ping_s`, as fresh as a pong would be: with the ack
        bound (10 s) as the window, the last frames read just before a partition's cut passed
        the first check of the batch written before them, and that batch was judged dead one
        ack bound late (26 s, not 16 s, in R1's partition runs)."""
        raw = stream.raw
        if not isinstance(raw, _LibP2PStream) or raw.connection is None:
            return False
        muxed = raw.connection.muxed_conn
        live_s = self.config.live_ping_s
        try:
            return await self._bridge.run(answers_ping, muxed, live_s, live_s)
        except HostClosed:
            return False

    async def peer_answers(self, peer_id: str) -> bool:
        """Does a connection to `peer_id` other than a WebRTC one answer a ping within
        `live_ping_s`, or read anything meanwhile or in the `live_ping_s` before (as
        `stream_answers`)?"""
        live_s = self.config.live_ping_s
        try:
            return await self._bridge.run(self._answers_on_trio, peer_id, live_s)
        except HostClosed:
            return False

    async def _answers_on_trio(self, peer_id: str, heard_within_s: float) -> bool:
        host = self._host
        if host is None:
            return False
        bound_s = self.config.live_ping_s
        for conn in host.get_network().get_connections(ID.from_base58(peer_id)):
            if not is_webrtc(conn) and await answers_ping(conn.muxed_conn, bound_s, heard_within_s):
                return True
        return False

    async def _close_unless_alive(self, connection: INetConn) -> None:
        if await answers_ping(connection.muxed_conn, self.config.live_ping_s):
            log.info("a connection answers a ping: slow, not gone: kept")
            return
        await self._close_unanswered(connection)

    async def _close_unanswered(self, connection: INetConn) -> None:
        log.info("a connection answers no ping: closed")
        self._mark_closing([connection], CLOSED_UNANSWERED)
        await _close_within_abort([connection], connection.close)

    def _start_nowait(self, work: Callable[[T], Awaitable[None]], arg: T) -> None:
        """Start `work(arg)` in the trio thread's nursery (the host's stop ends it) and return
        at once; on a host that is stopping, nothing."""
        with contextlib.suppress(HostClosed):
            self._bridge.run_sync_soon(self._spawn_quietly, work, arg)

    def _spawn_quietly(self, work: Callable[[T], Awaitable[None]], arg: T) -> None:
        with contextlib.suppress(HostClosed):
            self._bridge.spawn(work, arg)

    async def _redial(self, peer_id: str) -> None:
        host = self._host
        if host is None:
            return
        connections = host.get_network().get_connections(ID.from_base58(peer_id))
        if not connections:  # closed meanwhile (a 50-node run logged 3 "closed" of none)
            log.info("%s is not connected: the next stream dials afresh", peer_id)
            return
        if all(is_webrtc(conn) for conn in connections):
            log.info("%s is reached over WebRTC alone: kept", peer_id)
            return
        if await self._answers_on_trio(peer_id, heard_within_s=0.0):
            log.info("%s answers a ping: slow, not gone: kept", peer_id)
            return
        log.info("%s answers no ping: closed, to dial afresh", peer_id)
        await self._disconnect_quietly(peer_id, CLOSED_UNANSWERED)

    def _mark_closing(self, connections: list[INetConn], reason: str) -> None:
        if self._tracker is not None:
            for conn in connections:
                self._tracker.closing(conn, reason)

    async def _disconnect_quietly(self, peer_id: str, reason: str = CLOSED_REFUSED) -> None:
        host = self._host
        if host is None:
            return
        peer = ID.from_base58(peer_id)
        connections = host.get_network().get_connections(peer)
        self._mark_closing(connections, reason)
        await _close_within_abort(connections, functools.partial(host.disconnect, peer))

    # ---- streams -----------------------------------------------------------------------------

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler) -> None:
        """Serve inbound streams of `protocol_id` with `handler`, one asyncio task per stream.

        The handler's task belongs to the host; a normal return closes the stream. A
        `RemoteProtocolError` it lets out is reported to the refusal handler (the peer pays,
        SPEC §11.6), a `StreamClosed` (the peer went away) is one quiet line, and an
        `UnreadableItem` (ours, logged by the supervisor) costs no one; either way the stream
        is reset. Any other exception is logged with its traceback.

        Inbound streams are bounded per peer and in total, and read within the budget and
        timeouts of `HostConfig.inbound` (SPEC §10.4).
        """
        self._handlers[protocol_id] = handler
        self._bridge.run_sync_soon(self._install_handler_on_trio, protocol_id)

    def _install_handler_on_trio(self, protocol_id: str) -> None:
        selector = getattr(self._host, "multiselect", None)
        if not isinstance(selector, PipelinedSelect):
            selector = None

        async def on_stream(stream: INetStream) -> None:
            held = b"" if selector is None else selector.take_deferred(stream)
            raw = _LibP2PStream(stream, self._tracker, held=held)
            peer = stream.muxed_conn.peer_id.to_base58()
            if not self._bridge.to_asyncio(self._on_inbound, protocol_id, raw, peer):
                await raw.reset()

        if self._host is not None:
            self._host.set_stream_handler(TProtocol(protocol_id), on_stream)
            if selector is not None:  # our handler takes what is held (`on_stream`)
                selector.defer_answer(TProtocol(protocol_id))

    def _on_inbound(self, protocol_id: str, raw: _LibP2PStream, peer: str) -> None:
        handler = self._handlers.get(protocol_id)
        if self._closing or handler is None or self._tasks is None or not self._admits(peer):
            self._reset_unread(raw)
            return
        try:
            self.inbound.open(peer)
        except RemoteProtocolError as exc:  # SPEC §10.4: past a cap, reset unread
            self._reset_unread(raw)
            self._refused(peer, exc, protocol=protocol_id, whole_frame=False)  # BUSY: free
            log.debug("inbound %s stream from %s refused: %s", protocol_id, peer[-8:], exc)
            return
        stream = self._frame_stream(raw, peer, protocol_id, self._read_limits)
        task = self._tasks.create_task(self._serve(handler, stream))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    def _admit_connection(self, conn: INetConn) -> bool:
        """On the trio thread: False for a connection past its peer's budget, closed soon."""
        muxed = conn.muxed_conn
        inbound = not getattr(muxed, "is_initiator", False)
        if self._connections.admits(muxed.peer_id.to_base58(), inbound=inbound):
            self._wire.connected(outbound=not inbound)  # the census (SPEC §20.6)
            return True
        with contextlib.suppress(HostClosed):  # not inline: libp2p's add_conn awaits the notifee
            self._bridge.spawn(conn.close)
        return False

    def _slots_exceeded(self, peer: str) -> None:
        """On the trio thread: a stream of `peer` past its slots was reset before negotiation."""
        excess = TooManyStreams("a stream past the peer's slots, reset before negotiation")
        self._stream_refused(peer, excess, protocol=CHARGED_STREAMS)

    def _stream_refused(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None:
        """On the trio thread: a stream of `peer` was reset for what the peer did (past its
        slots, over a WebRTC read budget); charged as one item (SPEC §10.4, §10.11)."""
        self._bridge.to_asyncio(self._charge_stream_refused, peer, error, protocol)

    def _charge_stream_refused(self, peer: str, error: RemoteProtocolError, protocol: str) -> None:
        self._refused(peer, error, protocol=protocol, whole_frame=False)

    def _reset_unread(self, raw: _LibP2PStream) -> None:
        with contextlib.suppress(HostClosed):
            self._bridge.run_sync_soon(self._bridge.spawn, raw.reset)

    async def _serve(self, handler: StreamHandler, stream: FrameStream) -> None:
        peer = stream.remote_peer
        try:
            await handler(stream)
        except StreamClosed as exc:  # a peer killed or gone mid-answer: expected on a mesh
            log.info("%s stream from %s ended early: %s", stream.protocol_id, peer[-8:], exc)
            await stream.reset()
        except UnreadableItem as exc:  # our damaged item: the asker did nothing wrong
            log.debug("%s stream from %s met %s", stream.protocol_id, peer[-8:], exc.item)
            await stream.reset()
        except RemoteProtocolError as exc:  # every peer error path reaches its standing
            self._refused(peer, exc, protocol=stream.protocol_id)
            log.debug("%s stream from %s refused: %s", stream.protocol_id, peer[-8:], exc)
            await stream.reset()
        except (StorageError, NodeFailed) as exc:  # the node's fatal fault: the supervisor's
            # handler logged it as the node's one ERROR and is stopping it (SPEC §11.8.5)
            log.debug("%s stream from %s met a fatal %r", stream.protocol_id, peer[-8:], exc)
            await stream.reset()
        except Exception:
            log.exception("stream handler for %s from %s failed", stream.protocol_id, peer)
            await stream.reset()
        else:
            await stream.close()
        finally:
            self.inbound.close(peer)
            if not stream.closed:  # cancelled: the host is stopping
                await stream.reset()

    def _frame_stream(
        self,
        raw: _LibP2PStream,
        peer: str,
        protocol_id: str,
        limits: ReadLimits | None = None,
    ) -> FrameStream:
        return FrameStream(
            raw=raw,
            bridge=self._bridge,
            remote_peer=peer,
            protocol_id=protocol_id,
            max_frame_bytes=self.config.max_frame_bytes,
            limits=limits,
            path=raw.path,
        )

    async def open_stream(
        self, peer_id: str, protocol_id: str, *, lazy: bool = False
    ) -> FrameStream:
        """Open a stream to `peer_id` (dialling known addresses if not connected).

        `lazy`: negotiate in the stream's first write (header, id and the caller's first frame
        in one) and first read (SPEC §10.1). For a caller that writes first and handles at
        its first read what the open would raise for the protocol: `ProtocolNotSpoken`, or
        `StreamRefused` for a negotiation that failed otherwise.

        Raises:
            PeerUnreachable: no connection could be made or kept (the path is lost).
            StreamRefused: the peer, connected, did not give the stream; `ProtocolNotSpoken`
                if it does not speak `protocol_id`.
        """
        raw = await self._call(
            StreamOpenFailed,
            f"open {protocol_id} to {peer_id}",
            self._open_on_trio,
            peer_id,
            protocol_id,
            lazy,
        )
        return self._frame_stream(raw, peer_id, protocol_id)

    async def _open_on_trio(self, peer_id: str, protocol_id: str, lazy: bool) -> _LibP2PStream:
        peer = ID.from_base58(peer_id)
        await self._forget_closed_connections(peer)  # so a closed one does not stop the dial
        host = self._require_host()
        try:
            if lazy:  # a bare stream: its first write and read negotiate (`LazyOpening`)
                stream = await host.get_network().new_stream(peer)
                stream.set_protocol(TProtocol(protocol_id))
            else:
                stream = await host.new_stream(peer, [TProtocol(protocol_id)])
        except Exception as exc:
            if _refused_protocol(exc):
                raise ProtocolNotSpoken(f"{peer_id} does not speak {protocol_id}") from exc
            # Told apart by what is left, not by libp2p's words: a connection still open
            # means the peer is there and the stream alone failed.
            what = f"open {protocol_id} to {peer_id}: {describe_error(exc)}"
            if _open_connection(host, peer):
                raise StreamRefused(what) from exc
            raise PeerUnreachable(what) from exc
        opening = LazyOpening(stream, TProtocol(protocol_id)) if lazy else None
        return _LibP2PStream(stream, self._tracker, opening)

    # ---- gossip (node/p2p/gossipsub.py) -------------------------------------------------------

    def set_topic_validator(self, topic_prefix: str, validator: GossipValidator) -> None:
        """Validate every message on topics starting with `topic_prefix` (longest prefix wins).

        `validator` runs on the trio thread for our own publishes too; a rejected message is
        neither delivered nor forwarded. Set validators before subscribing.
        """
        self._gossip.set_topic_validator(topic_prefix, validator)

    async def subscribe(self, topic: str) -> Subscription:
        """Join `topic`; returns an async iterator of messages from other peers.

        Our own publishes are not delivered back. Use `async with await host.subscribe(t)`
        or call `unsubscribe()`; the host's stop ends every subscription.

        Raises:
            LocalProtocolError: already subscribed to `topic` on this host.
        """
        return await self._gossip.subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish `data` on `topic` (at most once; may be dropped on the way).

        Raises:
            LocalProtocolError: our own validator for `topic` rejects `data`.
        """
        await self._gossip.publish(topic, data)

    def topic_peers(self, topic: str) -> int:
        """How many peers we know follow `topic` (their subscriptions reached us)."""
        return self._gossip.topic_peers(topic)

    async def wait_for_mesh_peer(self, topic: str, peer_id: str) -> None:
        """Wait until `peer_id` is in our gossipsub mesh for `topic` (bound it with a timeout)."""
        await self._gossip.wait_for_mesh_peer(topic, peer_id)

    # ---- kad-dht (node/p2p/dht.py) ---------------------------------------------------------

    def _require_dht_layer(self) -> DhtLayer:
        if self._dht is None:
            raise LocalProtocolError("the DHT is off: set dht_validate and dht_select")
        return self._dht

    async def dht_put(self, key: str, value: bytes) -> None:
        """Store `value` under `key` here and at the closest DHT peers that accept it.

        Best effort beyond this node: peers that refuse or cannot be reached are skipped (a
        later `dht_get` elsewhere corrects them). ~180 ms over 6 nodes (libp2p-notes).

        Raises:
            LocalProtocolError: the DHT is off; `dht_validate` rejects the value (cause
                chained); or this node already holds a value that `dht_select` prefers.
            P2PError: libp2p failed (cause chained).
        """
        await self._require_dht_layer().put(key, value)

    async def dht_get(self, key: str) -> bytes | None:
        """The best valid value for `key`: our own copy if we hold one, else from the peers
        nearest the key (`dht.NEAREST_ASKED` at a time, and any nearer they name), not from
        every peer of the mesh.

        Values that fail `dht_validate` are never returned; between several valid ones
        `dht_select` decides.

        Returns:
            The value, or None when no peer reached holds a valid one.

        Raises:
            LocalProtocolError: the DHT is off, or `key` is outside the DHT's namespace.
            P2PError: libp2p failed (cause chained).
        """
        return await self._require_dht_layer().get(key)

    @property
    def dht_asked(self) -> int:
        """Peers asked by `dht_get` so far (0 with the DHT off)."""
        return 0 if self._dht is None else self._dht.asked


def _refused_protocol(exc: BaseException) -> bool:
    """Did the peer answer `na` to every protocol asked (py-libp2p 0.8.1 raises one
    `MultiselectClientError` saying so, under `StreamFailure`), rather than fail otherwise?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MultiselectClientError) and str(seen).startswith(
            "protocols not supported"
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _ended_unanswered(error: BaseException) -> bool:
    """A lazy negotiation that failed because the stream just ended (py-libp2p wraps an end
    and a reset alike): a peer that refuses resets the stream or answers `na`; an end with no
    answer is the connection closing under it (the peer killed), a lost path as `open_stream`
    tells it. Taken for a refusal, it backed a sender's probes of a restarted home off to
    §11.5.1's minute (SPEC §11.5.2)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, StreamEOF | IncompleteReadError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _open_connection(host: IHost, peer: ID) -> bool:
    """Trio thread: does the swarm hold a connection to `peer` that is not closed?"""
    network = host.get_network()
    if not isinstance(network, Swarm):
        return peer in host.get_connected_peers()
    return any(not connection.is_closed for connection in network.get_connections(peer))


def _leaves(error: BaseException | None) -> str:
    """`RuntimeError('...')`: the errors inside trio's nested nursery groups, each once."""
    if isinstance(error, BaseExceptionGroup):
        return ", ".join(dict.fromkeys(_leaves(inner) for inner in error.exceptions))
    return repr(error)


def _refuse_nothing(
    peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
) -> None:
    """The refusal handler until one is set: a bare host keeps no standing."""


def _dial_from(network: INetwork, ip: str) -> None:
    """Make the TCP transport's dials leave from `ip` (any free port)."""
    for transport in network.transport_manager.get_transports():  # type: ignore[attr-defined]
        if isinstance(transport, TCP):
            dial = functools.partial(transport.dial_with_source, source=(ip, 0))
            transport.dial = dial  # type: ignore[method-assign]


def _transport_addrs(host: IHost) -> list[str]:
    return [str(a) for a in host.get_transport_addrs()]


def _path_of(conn: INetConn) -> str | None:
    """How `conn` reaches its peer: `WEBRTC_PATH`, the relay's peer id, or None (direct)."""
    return WEBRTC_PATH if is_webrtc(conn) else relay_of(conn)


def _path_name(path: str | None) -> str:
    """A path as `P2PHost.peer_paths` names it: `DIRECT_PATH` for None."""
    return DIRECT_PATH if path is None else path


async def _close_connections(host: IHost, grace_s: float) -> None:
    """Close all connections concurrently, each only until its socket is closed, for at most
    `grace_s` (`STOP_GRACE_S`)."""
    network = host.get_network()
    with trio.move_on_after(grace_s):
        async with trio.open_nursery() as nursery:
            for conns in list(network.connections.values()):
                for conn in list(conns):
                    nursery.start_soon(_close_quietly, conn)


def _close_sockets(host: IHost) -> None:
    """Close the TCP socket under each of `host`'s connections (`STOP_ABORT_S`)."""
    for conns in list(host.get_network().connections.values()):
        _close_sockets_of(conns)


def _close_sockets_of(connections: list[INetConn]) -> None:
    for conn in connections:
        socket = _tcp_socket_of(conn)
        if socket is not None:
            socket.socket.close()  # a no-op where the connection closed it already


async def _close_within_abort(
    connections: list[INetConn], closing: Callable[[], Awaitable[None]]
) -> None:
    """Run `closing` (a close of `connections`), with their TCP sockets closed under them if
    it still runs after `DISCONNECT_ABORT_S`; its failure is logged."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_close_sockets_after, connections, DISCONNECT_ABORT_S)
        try:
            await closing()
        except Exception as exc:
            log.debug("closing %d connection(s) failed: %r", len(connections), exc)
        nursery.cancel_scope.cancel()


async def _close_sockets_after(connections: list[INetConn], seconds: float) -> None:
    """Close the TCP sockets under `connections` if their close still runs after `seconds`
    (`DISCONNECT_ABORT_S`); cancelled when it ended."""
    await trio.sleep(seconds)
    log.info(
        "closing %d connection(s) still open after %g s: their sockets", len(connections), seconds
    )
    _close_sockets_of(connections)


_LAYER_ATTRS: Final = ("muxed_conn", "secured_conn", "conn", "read_writer", "read_write_closer")
"""Where each layer of a py-libp2p TCP connection keeps the one under it: swarm connection,
muxer, secure session, Noise framing, length framing, then the raw connection's `stream`."""


def _tcp_socket_of(conn: INetConn) -> trio.SocketStream | None:
    """The TCP socket under `conn`, or None for another transport (QUIC, WebRTC) or a relayed
    circuit (it runs on a stream of the relay's connection, whose socket is not this one's)."""
    layer: object = conn
    for _ in range(12):  # seven layers for TCP + Noise + yamux
        if isinstance(layer, trio.SocketStream):
            return layer
        if isinstance(layer, INetStream):
            return None
        below = next((getattr(layer, a) for a in _LAYER_ATTRS if hasattr(layer, a)), None)
        if below is None:  # the raw connection, then its TCP stream wrapper
            below = getattr(layer, "stream", None)
        if below is None:
            return None
        layer = below
    return None


async def _close_quietly(conn: INetConn) -> None:
    """Close `conn`, and stop waiting once its muxer has closed the socket.

    py-libp2p 0.8.1 then sleeps 100 ms in `Yamux.close` and 100 ms more in `SwarmConn` (to let
    stream handlers see their resets) before it tells notifees: at stop our handlers are gone
    and the host follows, so those 200 ms only delayed every stop of a connected node.
    """
    socket_closed = getattr(conn.muxed_conn, "event_closed", None)
    async with trio.open_nursery() as nursery:
        if isinstance(socket_closed, trio.Event):
            nursery.start_soon(_cancel_when_set, socket_closed, nursery.cancel_scope)
        try:
            await conn.close()
        except Exception as exc:  # shutdown races are expected here
            log.debug("closing connection failed: %r", exc)
        nursery.cancel_scope.cancel()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
