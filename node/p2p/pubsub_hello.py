"""Pubsub that tells a new peer every subscription, including those made while its stream opened.

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); serves
SPEC §14.3. `GossipLayer` builds one `HelloPubsub` per host; it runs on the trio thread.

py-libp2p 0.8.1's `Pubsub._handle_new_peer` builds the hello (our subscriptions) and then awaits
its write before it adds the peer to `peers`; `subscribe` and `unsubscribe` announce only to
`peers`. A subscription made in between reached neither: the peer never learnt it, never put us
in its mesh for that topic, and only IHAVE gossip from others could bring it our messages. On a
busy machine the window is wide (a node joining a room as a peer connects); it left a test's
leaf that had one peer out of every mesh. So once the peer is added, whatever changed since its
hello is announced to it as subscribe and unsubscribe do.

It also writes our signed peer record once per stream rather than in every RPC
(`peer_records.RecordsTold`), and counts the announces and publishes py-libp2p drops for a
full peer queue with the router's drops (`MeshRouter.note_dropped`), and counts each RPC it
writes by kind (`rpc_kind`) in the host's `WireCounts`.

State: per host, the peer records told per stream, the rate of re-greetings per peer and their
counts; on the trio thread only (py-libp2p's pubsub runs there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

from libp2p.abc import INetStream
from libp2p.host.exceptions import StreamFailure
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize, RpcQueue

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.p2p.gossip_router import MeshRouter
from hearthmesh.node.p2p.peer_records import RecordsTold
from hearthmesh.node.p2p.wire_counts import WireCounts
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol.errors import RemoteProtocolError, TooManyStreams

__all__ = ["NEGOTIATION_RETRIES", "REGREET_BURST", "REGREET_PER_S", "HelloPubsub", "rpc_kind"]

log = logging.getLogger(__name__)

REGREET_BURST: Final = 4
REGREET_PER_S: Final = 1 / 15
"""Greetings again a peer may cost us (`_greet_again`): 4 at once, then one per 15 s. Each one
is a stream and a hello with our record, set off by the peer opening a connection and closing
the one our stream was on; an honest peer does that now and then, a churning one in a loop
(SPEC §14.3)."""

NEGOTIATION_RETRIES: Final = 3
"""Times a failed negotiation of our gossip stream to a peer that is still connected is tried
again (py-libp2p's backoff: 0.5, 1, 2 s). py-libp2p retries a stream that failed to open but
gives up for good on one whose negotiation failed, and a stream opened on a connection that was
closing fails that way: the peer then stayed out of gossip until it connected afresh (a test's
reconnecting sibling, under load). Bounded: a peer that does not speak gossip costs 3 more."""

_negotiation_failures: ContextVar[list[int] | None] = ContextVar(
    "_negotiation_failures", default=None
)
"""Failed negotiations so far in this task's registration loop (`_handle_new_peer_with_retry`
runs in a task of its own)."""

_hello_topics: ContextVar[frozenset[str] | None] = ContextVar("_hello_topics", default=None)
"""The topics of the hello built in this task (each `_handle_new_peer` runs in its own)."""


def rpc_kind(rpc: rpc_pb2.RPC) -> str:
    """What a gossip RPC we write is for, its first part in this order: `message` (a publish
    or a forward), `ihave`, `iwant`, `graft` or `prune` (mesh upkeep), `subscription`, or
    `other` (SPEC §20.6: which of them a node's gossip writes grow by)."""
    if rpc.publish:
        return "message"
    control = rpc.control
    for kind in ("ihave", "iwant", "graft", "prune"):
        if getattr(control, kind):
            return kind
    return "subscription" if rpc.subscriptions else "other"


class HelloPubsub(Pubsub):
    """`Pubsub` whose new peers learn the subscriptions their hello missed (module docstring)."""

    def __init__(
        self,
        *args: object,
        wire: WireCounts | None = None,
        refused: Callable[[str, RemoteProtocolError], None] | None = None,
        protected: Callable[[str], bool] = lambda _peer: False,
        **kwargs: object,
    ) -> None:
        """`refused(peer, error)` (trio thread) charges a peer past its greeting budget;
        `protected(peer)` (trio thread) names the peers exempt from it (our user's other homes,
        as for the connection budget, SPEC §11.6.6)."""
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._records_told = RecordsTold()
        self._wire = wire
        self._refused = refused
        self._protected = protected
        self._regreets = RateLimiter(REGREET_PER_S, REGREET_BURST, SystemClock())
        self.regreeted = 0
        """Peers greeted again (`_greet_again`), for tests and the budget's check."""
        self.not_regreeted = 0
        """Times a peer past its budget was charged and not greeted again."""

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        """py-libp2p's write, our signed record left out where the stream carried it; counted
        by kind in `wire` (the stream's own count has the protocol's total)."""
        rpc = self._records_told.trimmed(stream, rpc_msg)
        written = bool(await super().write_msg(stream, rpc))
        if written and self._wire is not None:
            self._wire.add(f"{stream.get_protocol()} {rpc_kind(rpc)}", rpc.ByteSize())
        return written

    def _enqueue_or_retry_announce(
        self,
        peer_id: ID,
        queue: RpcQueue,
        rpc_msg: rpc_pb2.RPC,
        announce: rpc_pb2.RPC.SubOpts | None,
    ) -> None:
        """py-libp2p's enqueue, which drops `rpc_msg` when the peer's queue is full: counted
        as the router's drops are."""
        if (
            not queue.closed
            and len(queue) >= OutBoundQueueSize
            and isinstance(self.router, MeshRouter)
        ):
            self.router.note_dropped(peer_id, "queue_full")
        super()._enqueue_or_retry_announce(peer_id, queue, rpc_msg, announce)

    async def handle_dead_peer_queue(self) -> None:
        """py-libp2p's, with one more case: a peer that still has a live connection but whose
        pubsub stream was on the one that closed is greeted again (`_greet_again`).

        py-libp2p leaves a peer alone while any connection to it is up, and a second
        connection that came while the first was up got no stream of its own (a peer with one
        is skipped): once the first closed, both sides kept writing into streams on it, and
        gossip between them stopped (a test of two hosts: nothing arrived within 10 s) until a
        write failed, that message lost."""
        async with self.dead_peer_receive_channel:
            self.event_handle_dead_peer_queue_started.set()
            async for peer_id in self.dead_peer_receive_channel:
                connections = self.host.get_network().get_connections(peer_id)
                live = [
                    conn.muxed_conn
                    for conn in connections
                    if conn.muxed_conn is None or not conn.muxed_conn.is_closed
                ]
                stream = self.peers.get(peer_id)
                if not live:
                    self._handle_dead_peer(peer_id)
                elif stream is not None and not any(m is stream.muxed_conn for m in live):
                    self._greet_again_within_budget(peer_id)

    def _greet_again_within_budget(self, peer_id: ID) -> None:
        """`_greet_again`, at most `REGREET_BURST` then one per 15 s per peer: past it the
        peer is charged and not greeted; its stream stays as it is (our next write to it fails
        and it leaves pubsub), so a peer that churns connections costs us no stream or hello
        for each one. A protected peer is greeted each time and never charged."""
        peer = peer_id.to_base58()
        if self._protected(peer) or self._regreets.take(peer):
            self._greet_again(peer_id)
            return
        self.not_regreeted += 1
        log.info("gossip peer %s reconnects too often: not greeted again", peer[-8:])
        if self._refused is not None:
            self._refused(peer, TooManyStreams("reconnects past its gossip greeting budget"))

    def _greet_again(self, peer_id: ID) -> None:
        """A new stream and hello on a live connection in place of the one on a closed
        connection; the peer's subscriptions, mesh place and replay gate stay (its own
        stream to us may be on the live connection already, and would not tell them again)."""
        log.info(
            "gossip peer %s: its stream's connection closed, greeting it again on another",
            peer_id.to_base58()[-8:],
        )
        self.regreeted += 1
        del self.peers[peer_id]
        queue = self.peer_queues.pop(peer_id, None)
        if queue is not None:
            queue.close()  # its sending task ends
        self._schedule_peer_stream_retry(peer_id)

    def get_hello_packet(self) -> rpc_pb2.RPC:
        packet = super().get_hello_packet()
        _hello_topics.set(frozenset(sub.topicid for sub in packet.subscriptions))
        return packet

    async def _handle_new_peer_with_retry(
        self,
        peer_id: ID,
        timeout: float | None = None,  # noqa: ASYNC109 (py-libp2p's signature)
    ) -> None:
        token = _negotiation_failures.set([0])
        try:
            await super()._handle_new_peer_with_retry(peer_id, timeout)
        finally:
            _negotiation_failures.reset(token)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        if not self._peer_is_connected(peer_id):
            # A gossip stream rides a connection the peer or we made; py-libp2p's `new_stream`
            # would dial one, so a greeting again or a retry that came after the peer left
            # (or after we closed it) called it back.
            return
        token = _hello_topics.set(None)
        try:
            await super()._handle_new_peer(peer_id)
            told = _hello_topics.get()
        except StreamFailure as error:
            failures = _negotiation_failures.get()
            if failures is None or failures[0] >= NEGOTIATION_RETRIES:
                raise
            failures[0] += 1  # py-libp2p's loop retries this one while the peer is connected
            raise SwarmException(f"gossip stream negotiation failed: {error}") from error
        finally:
            _hello_topics.reset(token)
        queue = self.peer_queues.get(peer_id)
        if told is None or queue is None or self.peers.get(peer_id) is None:
            return  # no hello went out, or the peer is not (or no longer) added
        now = frozenset(self.topic_ids)
        for topic, subscribe in [(t, True) for t in now - told] + [(t, False) for t in told - now]:
            packet, subopt = self._build_announce_rpc(topic, subscribe=subscribe)
            self._enqueue_or_retry_announce(peer_id, queue, packet, subopt)
