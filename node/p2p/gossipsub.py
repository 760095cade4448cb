"""Gossipsub for `P2PHost`: pubsub setup, topic validators, message ids, subscriptions.

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). `P2PHost` owns
one `GossipLayer` and forwards its public gossip methods to it, so callers only ever see the
host. As in the host, libp2p objects are touched on the trio thread only: asyncio-facing
coroutines hop there through the host's call path (`BridgeCall`), and messages come back with
`TrioThread.to_asyncio`.

Settings: gossipsub v1.1, signed (strict), spam protection and adaptive gossip off, 1 s
heartbeat, app-supplied message ids and prefix-matched topic validators (libp2p-notes
"Gossipsub"). A subscription joins the topic's mesh before it is announced, not after as
libp2p's `Pubsub.subscribe` does (`_subscribe_on_trio` says why). The router is `MeshRouter`
(a peer our heartbeat prunes is backed off from, a mesh is grafted only up to D, and IHAVEs
name the ids peers dedupe by, SPEC §14.3), a peer's signed peer record is checked once while
it stays the same (`peer_records`), and a new peer learns the subscriptions its hello missed
(`pubsub_hello`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol, TypeVar

from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.p2p import peer_records
from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.errors import HostClosed, P2PError
from hearthmesh.node.p2p.gossip import GossipMessage, GossipValidator, MessageIdFn, Subscription
from hearthmesh.node.p2p.gossip_router import MeshCounts, MeshRouter
from hearthmesh.node.p2p.pubsub_hello import HelloPubsub
from hearthmesh.node.p2p.wire_counts import WireCounts
from hearthmesh.protocol.errors import LocalProtocolError, MalformedMessage, RemoteProtocolError

__all__ = ["HEARTBEAT_S", "MESH_SLACK", "BridgeCall", "GossipLayer", "first_seqno"]

log = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT_S: Final = 1
"""Gossipsub heartbeat: the mesh forms in ~1.5 s (libp2p-notes "Gossipsub")."""
MESH_SLACK: Final = 2
"""D_high = D + `MESH_SLACK` (py-libp2p's and go-libp2p's usual 2 * D: 12 at D 6). Peers GRAFT
us whenever their mesh runs short and we take them up to D_high, so meshes fill towards it, and
every mesh peer gets a copy of each message: a node's copies per message grew with the mesh
until 12 (SPEC §14.3, §20.6)."""
_HEARTBEAT_INITIAL_DELAY_S: Final = 0.1
_WAIT_FOREVER_S: Final = 1e9  # libp2p waits need a timeout; callers bound them with asyncio
_KNOWN_IDS: Final = 16
"""Payloads whose message id is kept (trio thread). py-libp2p asks one message's id several
times as it takes it in (seen? mark seen, the router's cache, IDONTWANT, our `GossipMessage`)
and again for each copy that arrives, each a CBOR decode and envelope parse of ours (~11 µs);
those asks come close together, so the last few payloads suffice. A count, not bytes: at most
this many payloads are held beyond their message's own life."""


class BridgeCall(Protocol):
    """The host's asyncio → trio call path: runs `fn` there, maps libp2p errors to `error`."""

    async def __call__(
        self, error: type[P2PError], what: str, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T: ...


def first_seqno(now_ms: int) -> int:
    """Where a host's gossip sequence numbers start (each publish takes the next): the wall
    clock in nanoseconds, as go-libp2p starts them, so a node restarted after a crash never
    signs a number it signed before (SPEC §14.3).

    py-libp2p 0.8.1 starts at the wall clock in *seconds*. A node that publishes more than one
    message a second runs ahead of that clock, so after a kill -9 and a restart it signed the
    same (origin, seqno) again over other data: its peers took that for equivocation, forwarded
    none of those messages and charged it 100 each (seen on the old release's nodes of
    `simulate --upgrade` after every restart of a peer)."""
    return now_ms * 1_000_000


class GossipLayer:
    """The gossipsub half of one `P2PHost` (see the module docstring)."""

    def __init__(
        self,
        *,
        bridge: TrioThread,
        call: BridgeCall,
        peer_id: str,
        message_id: MessageIdFn | None,
        subscription_queue_size: int,
        degree: int,
        on_garbled: Callable[[str, RemoteProtocolError], None],
        on_churn: Callable[[str, RemoteProtocolError], None] | None = None,
        wire: WireCounts | None = None,
    ) -> None:
        """`on_garbled(peer, error)` (trio thread): a peer sent a gossip RPC that does not
        decode; its stream was reset. `on_churn(peer, error)` (trio thread): a peer reconnects
        past its greeting budget (`HelloPubsub`). `wire`: the host's counts, which get each
        RPC we write by kind (`HelloPubsub.write_msg`)."""
        self._wire = wire
        self._on_garbled = on_garbled
        self._on_churn = on_churn
        self._bridge = bridge
        self._call = call
        self._peer_id = peer_id
        self._message_id = message_id
        self._queue_size = subscription_queue_size
        self._degree = degree
        self._subscriptions: dict[str, Subscription] = {}
        self._protected: Callable[[str], bool] = lambda _peer: False
        # Owned by the trio thread:
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._gossipsub: MeshRouter | None = None
        self._trio_validators: dict[str, GossipValidator] = {}

    def protect(self, protected: Callable[[str], bool]) -> None:
        """Exempt the peers `protected` names from the greeting-again budget (`HelloPubsub`);
        asked on the trio thread, so it must be safe to call there."""
        self._protected = protected

    # ---- lifetime (trio thread) ---------------------------------------------------------------

    def build(self, host: IHost) -> None:
        """Create gossipsub and pubsub on `host` before it listens (trio thread)."""
        degree = self._degree
        peer_records.install()
        self._gossipsub = MeshRouter(
            protocols=[PROTOCOL_ID_V11],
            degree=degree,
            degree_low=max(1, degree - 2),
            degree_high=degree + MESH_SLACK,
            heartbeat_interval=HEARTBEAT_S,
            heartbeat_initial_delay=_HEARTBEAT_INITIAL_DELAY_S,
            adaptive_gossip_enabled=False,  # else the heartbeat stretches to 30-60 s
            spam_protection_enabled=False,  # else 10 msg/s per topic, our own included
        )
        self._pubsub = HelloPubsub(
            host,
            self._gossipsub,
            strict_signing=True,
            msg_id_constructor=self._msg_id_constructor(),
            wire=self._wire,
            refused=self._on_churn,
            protected=lambda peer: self._protected(peer),  # set before or after the build
        )
        self._pubsub.counter = first_seqno(SystemClock().now_ms())
        for protocol in self._gossipsub.get_protocols():  # in place of pubsub's own handler
            host.set_stream_handler(protocol, self._read_rpcs)
        self._host = host

    async def _read_rpcs(self, stream: INetStream) -> None:
        """Pubsub's stream handler, less one way for a peer to end the whole host: py-libp2p
        lets a protobuf `DecodeError` out of it (it catches only its own read errors), and that
        ended the connection's task group and so the host. A garbled RPC now ends its stream
        and the peer's pubsub state, as a read error does there, and is charged (SPEC §11.6)."""
        pubsub = self._require_pubsub()
        try:
            await pubsub.stream_handler(stream)
        except DecodeError as exc:
            peer = stream.muxed_conn.peer_id
            log.info("gossip RPC from %s does not decode: %s", peer.to_base58()[-8:], exc)
            with contextlib.suppress(Exception):  # already reset or closed: nothing to undo
                await stream.reset()
            pubsub._handle_dead_peer(peer)  # what its own handler does after a read error
            garbled = MalformedMessage("a gossip RPC that does not decode")
            self._on_garbled(peer.to_base58(), garbled)
        except Exception:
            # Anything else py-libp2p lets out of its read loop is not the peer's doing as far
            # as we can tell: uncharged, but it ends this stream and the peer's pubsub state
            # only. Raised on, it ended the host's whole libp2p run while the node's API went on
            # acking sends (py-libp2p's expired peer record, SPEC §14.3: R1 lost a node's
            # deliveries for 55 s and 6 minutes).
            peer = stream.muxed_conn.peer_id
            log.exception("gossip from %s: the read loop failed", peer.to_base58()[-8:])
            with contextlib.suppress(Exception):
                await stream.reset()
            pubsub._handle_dead_peer(peer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run pubsub and gossipsub while the block runs (trio thread, after `build`).

        Close the host's connections before leaving the block: an RPC that arrives after
        pubsub's service stopped crashes the whole host ("Nursery is closed").
        """
        pubsub, gossipsub = self._pubsub, self._gossipsub
        if pubsub is None or gossipsub is None:
            raise HostClosed("gossip layer was not built")
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            await pubsub.wait_until_ready()
            yield

    def release(self) -> None:
        """Stop what the services leave running and forget libp2p objects (trio thread)."""
        if self._pubsub is not None:
            # Pubsub's seen-message cache runs a sweeper thread that nothing else stops.
            self._pubsub.seen_messages.stop()
        self._host = self._pubsub = self._gossipsub = None

    def end_subscriptions(self) -> None:
        """End every subscription (asyncio side; the host is stopping)."""
        for sub in self._subscriptions.values():
            sub.end()
        self._subscriptions.clear()

    def mesh_counts(self) -> MeshCounts:
        """A copy of the router's GRAFT and PRUNE counts (zeros before `build`)."""
        router = self._gossipsub
        return MeshCounts() if router is None else copy.deepcopy(router.counts)

    def rpcs_dropped(self) -> int:
        """RPCs py-libp2p dropped for a full peer queue (`MeshCounts.rpcs_dropped`); an int
        read across threads is whole."""
        router = self._gossipsub
        return 0 if router is None else router.counts.rpcs_dropped

    def mesh_peers(self) -> set[str]:
        """The peers in any of our topics' meshes (trio thread; none before `build`)."""
        router = self._gossipsub
        if router is None:
            return set()
        return {peer.to_base58() for peers in router.mesh.values() for peer in peers}

    def topic_peers(self, topic: str) -> int:
        """Peers known to follow `topic` (0 before `build`); a set's length read across
        threads is whole."""
        pubsub = self._pubsub
        return 0 if pubsub is None else len(pubsub.peer_topics.get(topic, ()))

    def _require_pubsub(self) -> Pubsub:
        if self._pubsub is None:
            raise HostClosed("libp2p host is not running")
        return self._pubsub

    # ---- message ids and validators ------------------------------------------------------------

    def _msg_id_constructor(self) -> Callable[[rpc_pb2.Message], bytes]:
        app_fn = self._message_id
        known: dict[bytes, bytes] = {}  # payload -> id, oldest first; the trio thread's

        def msg_id(msg: rpc_pb2.Message) -> bytes:
            if app_fn is None:
                return bytes(msg.from_id) + bytes(msg.seqno)
            data = bytes(msg.data)
            found = known.get(data)
            if found is not None:
                return found  # the app's id is a function of the payload alone
            try:
                found = app_fn(data)
            except Exception:
                # Undecodable payload: a per-publication id keeps it out of the dedupe space
                # of real envelopes; the topic validator then rejects it.
                return b"\x00undecodable:" + bytes(msg.from_id) + bytes(msg.seqno)
            if len(known) >= _KNOWN_IDS:
                del known[next(iter(known))]
            known[data] = found
            return found

        return msg_id

    def _gossip_message(
        self, topic: str, msg: rpc_pb2.Message, forwarder: ID | None = None
    ) -> GossipMessage:
        return GossipMessage(
            topic=topic,
            origin=ID(bytes(msg.from_id)).to_base58(),
            data=bytes(msg.data),
            msg_id=self._require_pubsub().get_message_id(msg),
            seqno=int.from_bytes(bytes(msg.seqno), "big"),
            forwarder="" if forwarder is None else forwarder.to_base58(),
        )

    def set_topic_validator(self, topic_prefix: str, validator: GossipValidator) -> None:
        """See `P2PHost.set_topic_validator`."""
        self._bridge.run_sync_soon(self._set_validator_on_trio, topic_prefix, validator)

    def _set_validator_on_trio(self, prefix: str, validator: GossipValidator) -> None:
        self._trio_validators[prefix] = validator
        if self._pubsub is not None:
            for topic in list(self._pubsub.topic_ids):
                self._install_validator_on_trio(topic)

    def _validator_for(self, topic: str) -> GossipValidator | None:
        best = max((p for p in self._trio_validators if topic.startswith(p)), key=len, default=None)
        return None if best is None else self._trio_validators[best]

    def _install_validator_on_trio(self, topic: str) -> None:
        validator = self._validator_for(topic)
        pubsub = self._require_pubsub()
        if validator is None:
            pubsub.remove_topic_validator(topic)
            return

        def check(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            try:
                return bool(validator(self._gossip_message(topic, msg, forwarder)))
            except Exception:
                log.warning("validator for %r raised; message rejected", topic, exc_info=True)
                return False

        pubsub.set_topic_validator(topic, check, False)

    # ---- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, topic: str) -> Subscription:
        """See `P2PHost.subscribe`."""
        if topic in self._subscriptions:
            raise LocalProtocolError(f"already subscribed to {topic!r}")
        sub = Subscription(topic, maxsize=self._queue_size, unsubscribe=self._unsubscribe)
        self._subscriptions[topic] = sub
        try:
            await self._call(P2PError, f"subscribe {topic}", self._subscribe_on_trio, sub)
        except BaseException:
            self._subscriptions.pop(topic, None)
            sub.end()
            raise
        return sub

    async def _subscribe_on_trio(self, sub: Subscription) -> None:
        self._install_validator_on_trio(sub.topic)
        pubsub = self._require_pubsub()
        # py-libp2p announces a subscription before its router joins the topic; a subscribed
        # peer GRAFTs on the announcement at once, and a GRAFT landing in between was PRUNEd
        # with a 60 s backoff on both sides, so the two stayed out of each other's mesh that
        # long (a busy machine widens the window). Joining first, the mesh is there when the
        # announcement goes out; `subscribe`'s own join is then a no-op.
        await pubsub.router.join(sub.topic)
        trio_sub = await pubsub.subscribe(sub.topic)
        self._bridge.spawn(self._pump_subscription, trio_sub, sub)

    async def _pump_subscription(self, trio_sub: Any, sub: Subscription) -> None:
        """Drain libp2p's 32-slot channel into asyncio without ever blocking (trio thread)."""
        host = self._host
        if host is None:
            raise HostClosed("libp2p host is not running")
        own = host.get_id().to_bytes()
        try:
            async for msg in trio_sub:
                if bytes(msg.from_id) == own:
                    continue
                message = self._gossip_message(sub.topic, msg)
                if not self._bridge.to_asyncio(sub.deliver_nowait, message):
                    return
        finally:
            self._bridge.to_asyncio(sub.end)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subscriptions.get(sub.topic) is sub:
            del self._subscriptions[sub.topic]
        with contextlib.suppress(HostClosed):
            await self._call(
                P2PError, f"unsubscribe {sub.topic}", self._unsubscribe_on_trio, sub.topic
            )

    async def _unsubscribe_on_trio(self, topic: str) -> None:
        await self._require_pubsub().unsubscribe(topic)

    # ---- publishing and the mesh --------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        """See `P2PHost.publish`."""
        await self._call(P2PError, f"publish on {topic}", self._publish_on_trio, topic, data)

    async def _publish_on_trio(self, topic: str, data: bytes) -> None:
        pubsub = self._require_pubsub()
        if topic not in pubsub.topic_validators:
            self._install_validator_on_trio(topic)
        validator = self._validator_for(topic)
        if validator is not None:
            probe = GossipMessage(topic=topic, origin=self._peer_id, data=data, msg_id=b"", seqno=0)
            if not validator(probe):
                raise LocalProtocolError(f"publish on {topic!r}: rejected by our own validator")
        await pubsub.publish(topic, data)

    async def wait_for_mesh_peer(self, topic: str, peer_id: str) -> None:
        """See `P2PHost.wait_for_mesh_peer`."""
        await self._call(
            P2PError, f"wait for mesh {topic}", self._wait_mesh_on_trio, topic, peer_id
        )

    async def _wait_mesh_on_trio(self, topic: str, peer_id: str) -> None:
        await self._require_pubsub().wait_for_mesh(
            ID.from_base58(peer_id), topic, timeout=_WAIT_FOREVER_S
        )
