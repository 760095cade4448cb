"""What the node does after a store write batch took something in (ARCHITECTURE §4).

The writers (`Receiver` for what arrives, `Outgoing` for our own membership changes) publish each
batch's `StoreOutcome` on the `StoreOutcomes` flow (node/delivery/outcomes.py) and know nothing
of who reacts. `AfterStore` is the subscriber that turns an outcome into the reactions of the
services above the store: hold relayed envelopes, look up unknown devices' homes, learn the rooms
of the sibling whose own-user envelope named a room unknown here, forward to our siblings, fetch
media, follow a room we joined, share our key of a room ahead when its members change
(SPEC §27.10.3) and tell the app they changed, and send our profile to a user who just became
a contact (SPEC §32.1).

State: none of its own (it reads the rooms
through `RoomMembers` and acts through the services it was given).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.delivery.relay import RelayForwarder
from hearthmesh.node.e2ee.key_ahead import KeyAhead
from hearthmesh.node.events import MembershipChanged
from hearthmesh.node.identity.home_lookup import HomeLookups
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.media.fetch import MediaFetcher
from hearthmesh.node.rooms.members import RoomMembers
from hearthmesh.node.rooms.topics import RoomTopics
from hearthmesh.node.run_state import RunState
from hearthmesh.node.subscribers import EventHub
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError, store_failed
from hearthmesh.protocol.identity import UserId

__all__ = ["AfterStore"]

log = logging.getLogger(__name__)


class AfterStore:
    """The node's reactions to a committed store write batch."""

    def __init__(
        self,
        *,
        user: UserId,
        run_state: RunState,
        relay: RelayForwarder,
        lookups: HomeLookups,
        homes: OwnHomes,
        outbox: OutboxWorker,
        media: MediaFetcher,
        members: RoomMembers,
        topics: RoomTopics,
        events: EventHub,
        supervisor: Supervisor,
        share_profile: Callable[[RoomId], Awaitable[None]],
        learn_rooms: Callable[[str], Awaitable[None]],
        key_ahead: KeyAhead,
    ) -> None:
        self._share_profile = share_profile
        self._user = user
        self._run_state = run_state
        self._relay = relay
        self._lookups = lookups
        self._homes = homes
        self._outbox = outbox
        self._media = media
        self._members = members
        self._topics = topics
        self._events = events
        self._supervisor = supervisor
        self._learn_rooms = learn_rooms
        """`SyncService.learn_rooms`: the rooms-only exchange with a sibling (SPEC §23.5)."""
        self._key_ahead = key_ahead

    def react(self, outcome: StoreOutcome) -> None:
        """Act on `outcome`; background work runs under the supervisor."""
        if not self._run_state.running():
            return  # stopping: the services that would act on it are gone
        if outcome.relayed_for:
            self._relay.hold(outcome.relayed_for)
        for user in outcome.unknown_devices:  # one lookup at a time per user (SPEC §13.5)
            self._supervisor.spawn(self._refresh_home(user), "refresh-home")
        for peer in self._rooms_known_by(outcome.unknown_rooms_from):
            self._supervisor.spawn(self._learn_rooms_quietly(peer), "learn-rooms")
        if outcome.queued_for_siblings:  # released or held back: the outbox sleeps meanwhile
            self._outbox.wake()
        self._media.want(outcome.released)
        for room in outcome.membership_changed:
            self._supervisor.spawn(self._membership_changed(RoomId(room)), "membership")
        for room in outcome.contacts_made:  # a new contact sees our profile (SPEC §32.1)
            self._supervisor.spawn(self._share(room), "share-profile")

    async def _share(self, room: RoomId) -> None:
        try:
            await self._share_profile(room)
        except HearthError as exc:  # a background reaction must never take the node down
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.warning("profile not shared in room %s: %s", room.hex()[:12], exc)

    def _rooms_known_by(self, delivered_by: set[str]) -> set[str]:
        """Which siblings to learn rooms from: the one that delivered our own envelope, else
        (gossip, a relay) every sibling."""
        if not delivered_by:
            return set()
        siblings = self._homes.sibling_peers()
        return set(delivered_by & siblings) or set(siblings)

    async def _learn_rooms_quietly(self, peer: str) -> None:
        try:
            await self._learn_rooms(peer)
        except HearthError as exc:  # the deferred envelope's retry asks again
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.info("rooms of sibling %s not learnt: %s", peer[-8:], exc)

    async def _refresh_home(self, user: UserId) -> None:
        await self._lookups.find(user)

    async def _membership_changed(self, room: RoomId) -> None:
        try:
            members = await self._members.of(room)
            if self._user in members:
                await self._topics.watch(room)
                self._key_ahead.room_changed(room)  # our key to its new members, or rotated
        except HearthError as exc:  # a background reaction must never take the node down
            if store_failed(exc):  # the store failed: the node fail-stops
                raise
            log.warning("membership change of room %s not applied: %s", room.hex()[:12], exc)
            return
        self._events.emit(MembershipChanged(room=room, members=frozenset(members)))
