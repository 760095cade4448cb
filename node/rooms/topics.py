"""The gossip topics of our rooms (SPEC §14.1): which we follow, and what arrives on them.

A room topic brings the fast-path copies of the room's envelopes, taken in batches so that
whatever queued up goes to the store in one hop. Typing indicators never go on it (they go to
contacts alone, SPEC §32.4): one that comes anyway is dropped. Payloads were verified by our
topic validator before they got here.
State owned here: the topics we follow (`RoomTopics`: one subscription per room, and the rooms
whose subscription is under way); who is a member is `RoomRegistry`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.receiver import Receiver
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.gossip import GossipMessage, Subscription
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.addressing import check_gossiped
from hearthmesh.protocol.authority import Ruling, gossip_ruling
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    store_failed,
)
from hearthmesh.protocol.gossip import GossipItem, decode_gossip, load_gossip, room_topic

__all__ = ["ROOM_TOPIC_PREFIX", "RoomTopics"]

log = logging.getLogger(__name__)

ROOM_TOPIC_PREFIX: Final = "/hearthmesh/room/"
_GOSSIP_BATCH: Final = 256
_ROOM_GOSSIP: Final = "room gossip listener"


class RoomTopics:
    """Subscriptions to our rooms' topics and their listeners."""

    def __init__(
        self,
        *,
        host: P2PHost,
        receiver: Receiver,
        clock: Clock,
        rooms: RoomRegistry,
        supervisor: Supervisor,
        standing: PeerStanding,
        running: Callable[[], bool],
        certificates: VerifiedCertificates,
    ) -> None:
        self._host = host
        self._receiver = receiver
        self._clock = clock
        self._rooms = rooms
        self._supervisor = supervisor
        self._standing = standing
        self._running = running
        self._certificates = certificates
        """The trio thread's own cache: the validator runs there (node/identity/certificates.py)."""
        self._topics: dict[RoomId, Subscription] = {}
        self._subscribing: set[RoomId] = set()

    def check(self, message: GossipMessage) -> None:
        """Topic check (trio thread): a verified envelope of this very room, of a kind that
        travels on gossip (SPEC §16.2.3), that its sender may write there (SPEC §14.1, §12.2),
        judged from the room's state in memory.

        Raises:
            RemoteProtocolError: anything else, with the code that says whose fault it is; a
                group's sender not (yet) known as a member costs nothing (code PROTOCOL).
        """
        item = decode_gossip(
            message.data, now_ms=self._clock.now_ms(), certificates=self._certificates
        )
        envelope = item.envelope
        if room_topic(envelope.room) != message.topic:
            raise MalformedMessage("an envelope of another room on this room's topic")
        check_gossiped(envelope)  # a receipt goes to the homes it is addressed to only
        ruling = gossip_ruling(self._rooms.view(envelope.room), envelope)
        if ruling is Ruling.NEVER:
            raise NotAuthorized(f"{envelope.kind.name} from a sender who may not write it here")
        if ruling is Ruling.NOT_YET:
            raise RemoteProtocolError("not a member of this group (yet): dropped")

    async def watch(self, room: RoomId) -> None:
        """Follow a room's topic (idempotent)."""
        if room in self._topics or room in self._subscribing:
            return
        self._subscribing.add(room)  # before the await: a concurrent call must not subscribe too
        try:
            subscription = await self._host.subscribe(room_topic(room))
        finally:
            self._subscribing.discard(room)
        self._topics[room] = subscription
        if not self._running():  # the node began stopping while we subscribed
            await subscription.unsubscribe()
            return
        self._supervisor.keep(lambda: self._listen(subscription), f"room-{room.hex()[:8]}")

    async def unwatch(self, room: RoomId) -> None:
        subscription = self._topics.pop(room, None)
        if subscription is not None:
            await subscription.unsubscribe()

    async def close(self) -> None:
        """End every subscription (their listeners end with them)."""
        for room in list(self._topics):
            try:
                await self.unwatch(room)
            except HearthError as exc:
                log.debug("unsubscribing from room %s failed: %s", room.hex()[:8], exc)

    async def _listen(self, subscription: Subscription) -> None:
        """Take the topic's messages in batches; each message is contained on its own, so what
        one peer sent can never end the listener (SPEC §11.8)."""
        async for first in subscription:
            messages = [first]
            while len(messages) < _GOSSIP_BATCH and (more := subscription.get_nowait()):
                messages.append(more)
            taken: list[tuple[GossipMessage, GossipItem]] = []
            for message in messages:
                with self._supervisor.contain(_ROOM_GOSSIP, _sender(message)):
                    item = load_gossip(message.data)  # our validator verified it already
                    if item.envelope.kind is not Kind.TYPING:  # typing: contacts only, §32.4
                        taken.append((message, item))
            if taken:
                await self._accept(taken)

    async def _accept(self, taken: list[tuple[GossipMessage, GossipItem]]) -> None:
        """Store a batch in one hop; if it fails, one by one, so only the message that breaks
        is dropped and charged to the peer that sent it."""
        if len(taken) > 1:
            try:
                results = await self._receiver.accept_gossip([item for _, item in taken])
            except Exception as exc:  # find the message that breaks it, one by one
                if store_failed(exc):  # one unreadable item is found one by one too (§11.8.7)
                    raise
                log.debug("a room gossip batch failed (%r): taken one by one", exc)
            else:
                self._charge(taken, results)
                return
        for message, item in taken:
            with self._supervisor.contain(_ROOM_GOSSIP, _sender(message)):
                self._charge([(message, item)], await self._receiver.accept_gossip([item]))

    def _charge(
        self, taken: list[tuple[GossipMessage, GossipItem]], results: list[DeliveryResult]
    ) -> None:
        """Envelopes the store refused cost their publishers, as on the deliver path."""
        sender = {item.envelope.message_id: _sender(message) for message, item in taken}
        for result in results:
            if result.status is AckStatus.REJECTED and result.message_id in sender:
                self._standing.refused_results(
                    sender[result.message_id], [result], protocol=ROOM_TOPIC_PREFIX
                )


def _sender(message: GossipMessage) -> str:
    """The peer that answers for what breaks after validation: its publisher. A forwarder only
    vouches for what its validator checks (SPEC §11.6), which every honest one passed."""
    return message.origin
