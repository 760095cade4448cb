"""Serving inbound deliver streams and gossip: verify, store, then ack (ARCHITECTURE §3 step 5).

Verification is pure protocol/ work; storing is `Inbox.accept` in one store write batch; the signed
ack goes out only after that transaction committed. A frame that cannot be a DELIVER batch is
answered with an ERROR frame and the stream is closed; a bad envelope inside a good batch is
rejected alone and the rest of the batch is stored.

State: the ids of envelopes stored recently (`RecentlyStored`, bounded), the certificates
verified on this thread, and the count of rejected frames; on the asyncio loop, touched by the
deliver-stream handler and the gossip pump. History is the store's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hearthmesh.node.clock import Clock, HybridClock
from hearthmesh.node.delivery.inbox import Arrival, Inbox, StoreOutcome
from hearthmesh.node.delivery.slow_arrivals import SlowArrivals
from hearthmesh.node.events import Logged, MessageReceived
from hearthmesh.node.identity.certificates import ThreadCertificates
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.subscribers import EventHub
from hearthmesh.protocol.arrival import RecentlyStored, error_result, reaches_the_app
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    AckStatus,
    Deliver,
    DeliveryResult,
    ack_frame,
    decode_frame,
    encode_error,
    verify_batch,
)
from hearthmesh.protocol.errors import ClockSkew, MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.gossip import GossipItem
from hearthmesh.protocol.identity import UserId, encode_certificate
from hearthmesh.protocol.receipts import waits_for_a_commit
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["Receiver"]

log = logging.getLogger(__name__)


class Receiver:
    """Turns verified arrivals into stored history, acks and app events."""

    def __init__(
        self,
        *,
        inbox: Inbox,
        store: AsyncStore,
        keyring: Keyring,
        clock: Clock,
        hlc: HybridClock,
        events: EventHub,
        on_outcome: Callable[[StoreOutcome], None],
        is_sibling: Callable[[str], bool],
        standing: PeerStanding,
    ) -> None:
        self._inbox = inbox
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._hlc = hlc
        self._events = events
        self._emit = events.emit
        self._on_outcome = on_outcome
        self._is_sibling = is_sibling
        self._standing = standing
        self.rejected_frames = 0
        self._recent = RecentlyStored()
        """What the store answered STORED or DUPLICATE lately (`protocol.arrival`: the store
        owns dedupe; this only spares a second copy the checks)."""
        self.slow = SlowArrivals(clock)
        """Messages released to the app late, with what brought them (SPEC §20.6)."""
        self.certificates = ThreadCertificates()
        """Sender certificates verified so far: the event loop's cache (deliveries, gossip
        listeners and presence share it; the trio thread's validators have their own)."""

    async def serve_deliver(self, stream: FrameStream) -> None:
        """Handle one inbound deliver stream until the peer closes it."""
        answer: bytes | None = None
        while True:
            try:  # an ack and the read of the next batch are one bridge hop
                data = await (
                    stream.read_frame() if answer is None else stream.write_then_read(answer)
                )
            except StreamClosed:
                return
            except RemoteProtocolError as exc:  # oversized or truncated frame: stream is done
                self._refuse(stream.remote_peer, exc)
                return
            try:
                frame = decode_frame(data)
                if not isinstance(frame, Deliver):
                    raise MalformedMessage("only DELIVER frames are sent to a receiver")
            except RemoteProtocolError as exc:
                self._refuse(stream.remote_peer, exc)
                await stream.write_frame(encode_error(exc))
                return
            results = await self.accept_batch(
                frame, peer=stream.remote_peer, from_sibling=self._is_sibling(stream.remote_peer)
            )
            self._standing.refused_results(stream.remote_peer, results, protocol=DELIVER_PROTOCOL)
            answer = ack_frame(self._keyring.node, frame.batch_id, tuple(results))

    def _refuse(self, peer: str, error: RemoteProtocolError) -> None:
        self.rejected_frames += 1
        # it logs a ban once; each frame only at DEBUG
        self._standing.refused(peer, error, protocol=DELIVER_PROTOCOL)
        log.debug("refused a frame from %s: %s (code %d)", peer[-8:], error, error.code)

    async def accept_batch(
        self, batch: Deliver, *, peer: str, from_sibling: bool = False, fetched: bool = False
    ) -> list[DeliveryResult]:
        """Verify, merge clocks, store; one result per item, in order.

        `peer` delivered the batch (or answered our fetch, `fetched`: what our users are not
        owed is not stored, SPEC §8.6): relayed items count against it.
        """
        # "Stored lately" answers DUPLICATE only for our user: a copy addressed to another
        # user is for us to relay even if we hold our own (a member of the same room).
        ours = all(item.recipient == self._keyring.user_id for item in batch.items)
        verified = verify_batch(
            batch,
            now_ms=self._clock.now_ms(),
            known=self._recent.seen if ours else _nothing_known,
            certificates=self.certificates,
        )
        items: list[Arrival | DeliveryResult] = []
        for item, raw in zip(verified, batch.items, strict=True):
            if item.already_stored:
                items.append(DeliveryResult(message_id=item.message_id, status=AckStatus.DUPLICATE))
                continue
            if item.error is not None or item.envelope is None:
                error = item.error or MalformedMessage("no envelope")
                items.append(error_result(item.message_id, error))
                continue
            try:
                self._hlc.merge(item.envelope.hlc)
            except ClockSkew as exc:
                items.append(error_result(item.message_id, exc))
                continue
            certificate = batch.certificates[raw.certificate]
            items.append(
                Arrival(
                    envelope=item.envelope, recipient=UserId(raw.recipient), certificate=certificate
                )
            )
        # Receipts alone ride behind the next commit (a send's), or commit after a short wait
        # (SPEC §16.3.3): a send that meets them no longer waits out their commit.
        kinds = (item.envelope.kind for item in items if isinstance(item, Arrival))
        run = self._store.run_behind if waits_for_a_commit(kinds) else self._store.run
        outcome = await run(
            self._inbox.accept,
            self._store.store,
            items,
            now_ms=self._clock.now_ms(),
            peer=peer,
            from_sibling=from_sibling,
            fetched=fetched,
            log=self._events.takes_logged,
        )
        self._publish(outcome, "fetch" if fetched else "deliver", peer)
        return outcome.results

    async def accept_gossip(self, items: list[GossipItem]) -> list[DeliveryResult]:
        """Verified envelopes from a room topic, for our user (the fast path), in one hop.

        Returns the result of each envelope that went to the store (by message id; those
        already stored or from a skewed clock are skipped): the caller charges refusals.
        """
        arrivals: list[Arrival | DeliveryResult] = []
        for item in items:
            if self._recent.seen(item.envelope.message_id):
                continue  # the guaranteed path brought it first
            try:
                self._hlc.merge(item.envelope.hlc)
            except ClockSkew as exc:
                log.info("gossip from a skewed clock ignored: %s", exc)
                continue
            arrivals.append(
                Arrival(
                    envelope=item.envelope,
                    recipient=self._keyring.user_id,
                    certificate=encode_certificate(item.certificate),
                )
            )
        if not arrivals:
            return []
        outcome = await self._store.run(
            self._inbox.accept,
            self._store.store,
            arrivals,
            now_ms=self._clock.now_ms(),
            fast_path=True,
            log=self._events.takes_logged,
        )
        self._publish(outcome, "gossip")
        return outcome.results

    def _publish(self, outcome: StoreOutcome, route: str, peer: str | None = None) -> None:
        self._recent.note(outcome.results)
        if outcome.released:
            self.slow.note(outcome.released, route, peer)
        if self._events.takes_logged:  # a client feed: it takes the entries before the releases
            logged = outcome.logged  # None: built for no feed, or entries moved (read the log)
            if logged is None or logged:
                self._emit(Logged(entries=None if logged is None else tuple(logged)))
        for envelope in outcome.released:
            if reaches_the_app(envelope):
                self._emit(MessageReceived(envelope=envelope))
        self._on_outcome(outcome)


def _nothing_known(_: bytes) -> bool:
    return False
