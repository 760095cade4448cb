"""`AfterStore` (node/after_store.py): each part of a store outcome sets off its reaction, and
nothing is set off while the node stops. The services it drives are fakes that record calls;
the run state, event hub and supervisor are the real ones."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from hearthmesh.node.after_store import AfterStore
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
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import UserId

ALICE = UserId(b"\x0a" * 32)
BOB = UserId(b"\x0b" * 32)
JOINED = RoomId(b"\x01" * 32)
LEFT = RoomId(b"\x02" * 32)
BROKEN = RoomId(b"\x03" * 32)


@dataclass
class Calls:
    """What the fake services were asked, in order."""

    held: list[set[UserId]] = field(default_factory=list)
    looked_up: list[UserId] = field(default_factory=list)
    wakes: int = 0
    wanted: list[list[Envelope]] = field(default_factory=list)
    watched: list[RoomId] = field(default_factory=list)
    siblings: tuple[bytes, ...] = ()
    shared: list[RoomId] = field(default_factory=list)
    sibling_peers: frozenset[str] = frozenset()
    learnt_from: list[str] = field(default_factory=list)
    ahead: list[RoomId] = field(default_factory=list)


class FakeServices:
    """Relay, lookups, own homes, outbox, media, members and topics in one recorder."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def hold(self, users: set[UserId]) -> None:
        self.calls.held.append(set(users))

    async def find(self, user: UserId) -> bool:
        self.calls.looked_up.append(user)
        return True

    def sibling_destinations(self) -> tuple[bytes, ...]:
        return self.calls.siblings

    def sibling_peers(self) -> frozenset[str]:
        return self.calls.sibling_peers

    async def learn_rooms(self, peer: str) -> None:
        self.calls.learnt_from.append(peer)

    def wake(self) -> None:
        self.calls.wakes += 1

    def want(self, envelopes: list[Envelope]) -> None:
        self.calls.wanted.append(list(envelopes))

    async def of(self, room: RoomId) -> set[UserId]:
        if room == BROKEN:
            raise HearthError("fold failed")
        return {ALICE, BOB} if room == JOINED else {BOB}

    async def watch(self, room: RoomId) -> None:
        self.calls.watched.append(room)

    async def share_profile(self, room: RoomId) -> None:
        self.calls.shared.append(room)

    def room_changed(self, room: RoomId) -> None:
        self.calls.ahead.append(room)


def after_store(calls: Calls, run_state: RunState, events: EventHub, sup: Supervisor) -> AfterStore:
    fake = FakeServices(calls)
    return AfterStore(
        user=ALICE,
        run_state=run_state,
        relay=cast(RelayForwarder, fake),
        lookups=cast(HomeLookups, fake),
        homes=cast(OwnHomes, fake),
        outbox=cast(OutboxWorker, fake),
        media=cast(MediaFetcher, fake),
        members=cast(RoomMembers, fake),
        topics=cast(RoomTopics, fake),
        events=events,
        supervisor=sup,
        share_profile=fake.share_profile,
        learn_rooms=fake.learn_rooms,
        key_ahead=cast(KeyAhead, fake),
    )


async def next_membership(events: EventHub, count: int) -> list[MembershipChanged]:
    found: list[MembershipChanged] = []
    async for event in events.subscribe():
        if isinstance(event, MembershipChanged):
            found.append(event)
            if len(found) == count:
                break
    return found


async def test_each_part_of_an_outcome_sets_off_its_reaction() -> None:
    calls = Calls(siblings=(b"sibling",))
    run_state, events = RunState(), EventHub()
    run_state.started()
    async with asyncio.timeout(5), Supervisor() as sup:
        reactions = after_store(calls, run_state, events, sup)
        changes = asyncio.create_task(next_membership(events, 2))
        await asyncio.sleep(0)  # the subscriber is registered before anything is emitted
        outcome = StoreOutcome(
            relayed_for={BOB},
            unknown_devices={BOB},
            membership_changed={bytes(JOINED), bytes(LEFT), bytes(BROKEN)},
            contacts_made={JOINED},
        )
        reactions.react(outcome)
        got = {change.room: change.members for change in await changes}
        assert got == {JOINED: frozenset({ALICE, BOB}), LEFT: frozenset({BOB})}
        assert calls.held == [{BOB}]
        assert calls.watched == [JOINED]  # the room we are a member of; the broken fold: none
        assert calls.ahead == [JOINED]  # our key shared ahead there alone
        assert calls.wanted == [[]]
        assert calls.wakes == 0  # nothing released: no entries for the siblings
        while not calls.looked_up or not calls.shared:  # noqa: ASYNC110 - the fake has no event
            await asyncio.sleep(0.001)
        assert calls.looked_up == [BOB]
        assert calls.shared == [JOINED]  # a new contact gets our profile (SPEC §32.1)


async def test_the_outbox_wakes_only_for_a_batch_that_queued_entries_for_our_siblings() -> None:
    """Released or held back alike: the outbox sleeps until a writer wakes it."""
    released = [cast(Envelope, object())]
    for queued, held_back, wakes in ((False, False, 0), (True, False, 1), (True, True, 1)):
        calls = Calls(siblings=(b"sibling",))
        run_state = RunState()
        run_state.started()
        outcome = StoreOutcome(released=[] if held_back else released)
        outcome.queued_for_siblings = queued
        async with asyncio.timeout(5), Supervisor() as sup:
            after_store(calls, run_state, EventHub(), sup).react(outcome)
        assert calls.wakes == wakes
        assert calls.wanted == [outcome.released]


async def test_our_own_envelope_for_an_unknown_room_learns_the_rooms_of_who_sent_it() -> None:
    """From the sibling that delivered it; from every sibling if gossip or a relay did."""
    cases = (({"phone"}, ["phone"]), ({""}, ["laptop", "phone"]), ({"relay"}, ["laptop", "phone"]))
    for delivered_by, learnt_from in cases:
        calls = Calls(sibling_peers=frozenset({"phone", "laptop"}))
        run_state = RunState()
        run_state.started()
        async with asyncio.timeout(5), Supervisor() as sup:
            outcome = StoreOutcome(unknown_rooms_from=delivered_by)
            after_store(calls, run_state, EventHub(), sup).react(outcome)
            while len(calls.learnt_from) < len(learnt_from):  # noqa: ASYNC110 - a fake's record
                await asyncio.sleep(0.001)
        assert sorted(calls.learnt_from) == learnt_from


async def test_a_stopping_node_reacts_to_nothing() -> None:
    calls = Calls(siblings=(b"sibling",))
    run_state = RunState()
    run_state.started()
    run_state.stopping()
    async with asyncio.timeout(5), Supervisor() as sup:
        outcome = StoreOutcome(
            released=[cast(Envelope, object())],
            relayed_for={BOB},
            unknown_devices={BOB},
            membership_changed={bytes(JOINED)},
            unknown_rooms_from={"sibling"},
        )
        after_store(calls, run_state, EventHub(), sup).react(outcome)  # spawns nothing
    assert calls == Calls(siblings=(b"sibling",))
