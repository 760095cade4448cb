"""Home lookups for the node's own needs (SPEC §13.5): misses back off, one lookup per user."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any

from hearthmesh.node.identity.home_lookup import (
    FIRST_LOOKUP_BURST,
    LIVE_WALK_BURST,
    LIVE_WALK_GAP_MS,
    LONG_MISS_AFTER,
    LONG_MISS_WAIT_MS,
    LOOKUPS_AT_ONCE,
    MAX_QUEUED,
    REFRESH_GAP_MS,
    REPEAT_GAP_MS,
    RETRY_AFTER_MISS_MS,
    HomeLookups,
)
from hearthmesh.protocol.identity import UserId

from ..conftest import FakeClock, counter_rng

ALICE = UserId(b"\x01" * 32)
BOB = UserId(b"\x02" * 32)


class _Dht:
    """Answers lookups from `homes`; each lookup waits for `release` when one is given."""

    def __init__(self) -> None:
        self.homes: set[UserId] = set()
        self.asked: list[UserId] = []
        self.release: asyncio.Event | None = None

    async def lookup(self, user: UserId) -> bool:
        self.asked.append(user)
        if self.release is not None:
            await self.release.wait()
        return user in self.homes


class _Tasks:
    """The lookups' `spawn` in these tests: a task of the test's loop each, kept till it ends
    (the node gives its supervisor's)."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[None]] = set()

    def __call__(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)


def _lookups(dht: _Dht, clock: FakeClock, **options: Any) -> HomeLookups:
    return HomeLookups(dht.lookup, spawn=_Tasks(), clock=clock, rng=counter_rng(), **options)


async def test_a_miss_is_asked_again_once_after_the_retry_delay() -> None:
    """SPEC §13.5: a user missed once is not asked again before half of RETRY_AFTER_MISS_MS
    (a home coming up publishes 10-30 s after its first peer), and is asked by its end."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    assert not await lookups.find(ALICE)
    assert not await lookups.find(ALICE)  # within the retry delay: answered from memory
    assert await lookups.find(BOB) is False  # another user is asked at once
    assert dht.asked == [ALICE, BOB]
    assert lookups.next_ask_ms(ALICE) - clock.now_ms() >= RETRY_AFTER_MISS_MS // 2
    clock.advance(RETRY_AFTER_MISS_MS // 2 - 1)
    assert not await lookups.find(ALICE)
    assert dht.asked == [ALICE, BOB]
    clock.advance(RETRY_AFTER_MISS_MS // 2 + 1)
    dht.homes.add(ALICE)
    assert await lookups.find(ALICE)
    assert await lookups.find(ALICE)  # found: asked again whenever the caller wants
    assert dht.asked == [ALICE, BOB, ALICE, ALICE]
    assert lookups.next_ask_ms(ALICE) == 0


async def test_callers_asking_at_once_share_one_lookup() -> None:
    clock, dht = FakeClock(), _Dht()
    dht.release = asyncio.Event()
    dht.homes.add(ALICE)
    lookups = _lookups(dht, clock)
    async with asyncio.timeout(5):
        waiting = [asyncio.create_task(lookups.find(ALICE)) for _ in range(5)]
        await asyncio.sleep(0)
        dht.release.set()
        assert await asyncio.gather(*waiting) == [True] * 5
    assert dht.asked == [ALICE]
    assert lookups.asked == 1


async def test_a_caller_that_stops_waiting_leaves_the_shared_lookup_to_the_others() -> None:
    """SPEC §13.5: a caller's bound ends its own wait, not the lookup. A room key's sender
    gives lookups 3 s; when it owned the walk, its timeout cancelled the walk for every caller
    sharing it, and the outbox's probe of a parked member ended with it, never to be probed
    again: a 50-node group's creator kept five members' welcomes parked for good."""
    clock, dht = FakeClock(), _Dht()
    dht.release = asyncio.Event()
    dht.homes.add(ALICE)
    lookups = _lookups(dht, clock)
    async with asyncio.timeout(5):
        bounded = asyncio.create_task(lookups.find(ALICE))  # asks first: owned the walk
        await asyncio.sleep(0)
        sharing = asyncio.create_task(lookups.find(ALICE))  # the outbox's probe, say
        for _ in range(5):
            await asyncio.sleep(0)
        bounded.cancel()  # its bound ran out
        for _ in range(5):
            await asyncio.sleep(0)
        assert not sharing.done()  # still waiting for the walk
        dht.release.set()
        assert await sharing
        assert await lookups.find(ALICE)
    assert bounded.cancelled()
    assert dht.asked == [ALICE, ALICE]  # one walk for both, then a fresh ask once found
    assert lookups.next_ask_ms(ALICE) == 0


async def test_many_users_at_once_walk_the_dht_a_few_at_a_time() -> None:
    """A group's absent members are looked up together: the walks take turns (each opens
    streams to peers whose slots are bounded, SPEC §10.4), and every user is still asked."""
    clock, dht = FakeClock(), _Dht()
    dht.release = asyncio.Event()
    # as many as may walk at once (the burst, and the turn free now), more than the slots
    users = [UserId(bytes([n]) * 32) for n in range(3, 4 + FIRST_LOOKUP_BURST)]
    assert len(users) > LOOKUPS_AT_ONCE
    lookups = _lookups(dht, clock)
    async with asyncio.timeout(5):
        finding = [asyncio.create_task(lookups.find(user)) for user in users]
        for _ in range(20):  # the others wait for a slot, however long the walks take
            await asyncio.sleep(0)
        assert len(dht.asked) == LOOKUPS_AT_ONCE
        dht.release.set()
        assert await asyncio.gather(*finding) == [False] * len(users)
    assert sorted(dht.asked) == sorted(users)


async def test_a_user_missed_again_and_again_is_asked_only_every_several_minutes() -> None:
    """SPEC §13.5: after LONG_MISS_AFTER misses in a row a user is known nowhere for now and
    waits LONG_MISS_WAIT_MS (at least its half) for the next lookup; the wait ends, and a
    record found then clears it."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    for _ in range(LONG_MISS_AFTER):
        assert not await lookups.find(ALICE)
        clock.advance(RETRY_AFTER_MISS_MS)  # the retry delay is over
    assert len(dht.asked) == LONG_MISS_AFTER
    clock.advance(LONG_MISS_WAIT_MS // 2 - 2 * RETRY_AFTER_MISS_MS)
    assert not await lookups.find(ALICE)  # known nowhere: answered from memory
    assert len(dht.asked) == LONG_MISS_AFTER
    clock.advance(LONG_MISS_WAIT_MS)
    dht.homes.add(ALICE)
    assert await lookups.find(ALICE)
    assert len(dht.asked) == LONG_MISS_AFTER + 1
    assert await lookups.find(ALICE)  # found: no wait any more


async def _known_nowhere(
    lookups: HomeLookups, clock: FakeClock, dht: _Dht, users: list[UserId]
) -> None:
    """Ask for `users` until each missed `LONG_MISS_AFTER` times, a turn at a time."""
    while any(dht.asked.count(user) < LONG_MISS_AFTER for user in users):
        for user in users:
            assert not await lookups.find_routine(user)
        clock.advance(REPEAT_GAP_MS)


async def test_users_known_nowhere_take_turns_a_repeat_gap_apart() -> None:
    """SPEC §13.5: node-wide, the lookups of users known nowhere are REPEAT_GAP_MS apart, each
    due user taking the next free turn, so a group's absent members cost a lookup a turn
    whatever their number; a user never missed is asked at once all the same."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    # few enough that each misses twice before the first one's long wait ends
    absent = [UserId(bytes([n]) * 32) for n in range(3, 13)]
    await _known_nowhere(lookups, clock, dht, absent)
    clock.advance(LONG_MISS_WAIT_MS)  # every one of them is due, and the burst refilled
    dht.asked.clear()
    start_ms = clock.now_ms()
    for user in absent:
        assert not await lookups.find_routine(user)
    assert dht.asked == absent[:1]  # the first takes the turn now, the others the next ones
    assert [lookups.next_ask_ms(u) for u in absent[1:]] == [
        start_ms + k * REPEAT_GAP_MS for k in range(1, len(absent))
    ]
    assert not await lookups.find_routine(ALICE)  # never missed: asked now, not after their turns
    assert dht.asked == [absent[0], ALICE]
    for turn in range(1, len(absent)):
        clock.advance(REPEAT_GAP_MS - 1)
        for user in absent:
            assert not await lookups.find_routine(user)
        assert len(dht.asked) == turn + 1  # not one before its turn
        clock.advance(1)
        for user in absent:
            assert not await lookups.find_routine(user)
        assert dht.asked[-1] == absent[turn]  # exactly one more, at its turn
    assert len(dht.asked) == len(absent) + 1


async def test_first_lookups_past_the_burst_and_every_retry_take_turns() -> None:
    """SPEC §13.5: a group's ~1,000 absent members made every home that sent to it walk for
    each at once and again 15-30 s later. The first FIRST_LOOKUP_BURST users never missed are
    asked at once; the next ones, and each retry after a miss, take the next free turns
    REPEAT_GAP_MS apart; the burst comes back one a turn."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    users = [UserId(bytes([n]) * 32) for n in range(3, 3 + FIRST_LOOKUP_BURST + 3)]
    start_ms = clock.now_ms()
    for user in users:
        assert not await lookups.find_routine(user)
    # the burst, then the one turn free now; the others wait for theirs
    assert dht.asked == users[: FIRST_LOOKUP_BURST + 1]
    waiting = users[FIRST_LOOKUP_BURST + 1 :]
    assert [lookups.next_ask_ms(u) for u in waiting] == [
        start_ms + REPEAT_GAP_MS * k for k in (1, 2)
    ]
    clock.advance(REPEAT_GAP_MS - 1)
    for user in waiting:
        assert not await lookups.find_routine(user)
    assert len(dht.asked) == FIRST_LOOKUP_BURST + 1
    clock.advance(1)
    for user in waiting:
        assert not await lookups.find_routine(user)
    assert dht.asked[-1] == waiting[0]  # at its turn
    assert not await lookups.find_routine(ALICE)  # the burst came back by one: a new user walks now
    assert dht.asked[-1] == ALICE

    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    missed = users[:3]
    for user in missed:
        assert not await lookups.find_routine(user)
    clock.advance(RETRY_AFTER_MISS_MS)  # each retry is due: one walks, the others take turns
    retry_ms = clock.now_ms()
    for user in missed:
        assert not await lookups.find_routine(user)
    assert dht.asked == [*missed, missed[0]]
    assert [lookups.next_ask_ms(u) for u in missed[1:]] == [
        retry_ms + REPEAT_GAP_MS * k for k in (1, 2)
    ]


async def test_a_crowd_known_nowhere_costs_a_node_a_few_walks_in_its_first_two_minutes() -> None:
    """SPEC §13.5, §20.6: a home's first send to a group of 1,024 asks for the ~1,000 absent
    members at once (the room key's sender), and its outbox probes each as its turn comes. In
    a 10-node scale run those walks, 3 kad streams each and every one a miss, were all the kad
    streams a node opened (1.22 a message per node): 16 at the first send, then one every
    10 s (29 walks in two minutes). A node's first two minutes of such a crowd now cost at
    most 15."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    crowd = [UserId(n.to_bytes(2, "big") * 16) for n in range(3, 1_003)]
    await asyncio.gather(*(lookups.find_routine(user) for user in crowd))  # the first probes
    for _ in range(120):  # the outbox probes each user when its next ask is due
        clock.advance(1_000)
        for user in crowd:
            if lookups.next_ask_ms(user) <= clock.now_ms():
                assert not await lookups.find_routine(user)
    assert len(dht.asked) <= 15


async def _probe_due(lookups: HomeLookups, clock: FakeClock, users: list[UserId]) -> None:
    """The outbox: each user whose next ask is due is asked."""
    for user in users:
        if lookups.next_ask_ms(user) <= clock.now_ms():
            await lookups.find_routine(user)


async def test_a_user_asked_live_after_a_crowd_walks_at_once() -> None:
    """SPEC §13.5: the outbox probes a group's ~1,000 absent members as their turns come.
    Turns handed out in the order asked made a member in that crowd (its hello failed, rows
    waiting) wait for all of them, 8 hours; a live ask (an envelope from it) put it first of
    the queue, a turn (30 s) away. It now walks at once, from the live budget."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    crowd = [UserId(n.to_bytes(2, "big") * 16) for n in range(1_003, 2_003)]  # not alice
    await asyncio.gather(*(lookups.find_routine(user) for user in [*crowd, ALICE]))
    clock.advance(1_000)
    assert not await lookups.find(ALICE)  # an envelope from her
    assert dht.asked[-1] == ALICE
    assert len([user for user in dht.asked if user in crowd]) == FIRST_LOOKUP_BURST + 1


async def test_a_member_missed_once_walks_past_a_crowd_never_walked_when_asked_live() -> None:
    """SPEC §13.5: alice missed once (her home not up yet) queues behind users with fewer
    misses: a group's ~1,000 absent members, never walked, one turn every 30 s, hours. A live
    ask once her retry is due (her home's key request, an envelope from her) walks at once
    and finds her; a routine one (the outbox's probe) does not."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    assert not await lookups.find_routine(ALICE)  # a miss
    crowd = [UserId(n.to_bytes(2, "big") * 16) for n in range(1_003, 2_003)]
    await asyncio.gather(*(lookups.find_routine(user) for user in crowd))
    clock.advance(RETRY_AFTER_MISS_MS)
    dht.homes.add(ALICE)
    asked = len(dht.asked)
    assert not await lookups.find_routine(ALICE)  # queued behind the crowd
    assert len(dht.asked) == asked
    assert await lookups.find(ALICE)
    assert dht.asked[-1] == ALICE


async def test_live_asks_walk_past_the_queue_at_most_their_budget() -> None:
    """SPEC §13.5: envelopes from users made up by a stranger are live asks: past the burst
    and the turns, they walk LIVE_WALK_BURST at once and then one each LIVE_WALK_GAP_MS,
    however many are asked; the others queue for turns as before."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    made_up = (UserId(n.to_bytes(4, "big") * 8) for n in itertools.count(10))
    for _ in range(FIRST_LOOKUP_BURST + 1):  # the burst, then the turn free now
        await lookups.find_routine(next(made_up))
    walked = len(dht.asked)
    for _ in range(3 * LIVE_WALK_BURST):
        assert not await lookups.find(next(made_up))
    assert len(dht.asked) == walked + LIVE_WALK_BURST
    clock.advance(LIVE_WALK_GAP_MS - 1)
    for _ in range(10):
        assert not await lookups.find(next(made_up))
    assert len(dht.asked) == walked + LIVE_WALK_BURST
    clock.advance(1)
    for _ in range(10):
        assert not await lookups.find(next(made_up))
    assert len(dht.asked) == walked + LIVE_WALK_BURST + 1


async def test_a_user_missed_goes_behind_users_never_walked() -> None:
    """SPEC §13.5: a miss sends a user to the back: its retry, asked first, waits behind users
    never walked asked after it; and a caller gone gives its place up after a turn."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    before = [UserId(bytes([n]) * 32) for n in range(3, 3 + FIRST_LOOKUP_BURST)]
    for user in [ALICE, *before]:  # the burst, then one turn: each misses
        assert not await lookups.find_routine(user)
    clock.advance(RETRY_AFTER_MISS_MS)  # every retry due, the burst back by one
    assert not await lookups.find_routine(before[0])  # takes the turn free now
    assert not await lookups.find_routine(ALICE)  # waits for the next
    fresh = [UserId(bytes([n]) * 32) for n in range(20, 24)]
    for user in fresh:  # one walks (the burst), three queue ahead of alice
        assert not await lookups.find_routine(user)
    waiting = fresh[1:]
    assert lookups.next_ask_ms(ALICE) > max(lookups.next_ask_ms(u) for u in waiting)
    deadline_ms = clock.now_ms() + 10 * REPEAT_GAP_MS
    while dht.asked.count(ALICE) < 2 and clock.now_ms() < deadline_ms:
        clock.advance(1_000)
        await _probe_due(lookups, clock, [ALICE, *waiting[1:]])  # waiting[0]'s caller is gone
    assert [u for u in dht.asked if u in waiting] == waiting[1:]
    assert dht.asked[-1] == ALICE


async def test_the_queue_is_bounded_the_last_user_waits_a_long_while() -> None:
    """SPEC §13.5: at most MAX_QUEUED users wait for a turn; past it the last leaves the queue
    and is not asked for half a LONG_MISS_WAIT_MS."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    count = FIRST_LOOKUP_BURST + 2 + MAX_QUEUED  # the burst, the turn, a full queue and one
    users = [UserId(n.to_bytes(4, "big") * 8) for n in range(10, 10 + count)]
    for user in users[: FIRST_LOOKUP_BURST + 1]:  # the burst, then the turn free now
        await lookups.find_routine(user)
    stamp = clock.now_ms()
    for user in users[FIRST_LOOKUP_BURST + 1 :]:
        assert not await lookups.find_routine(user)
    # the one before it waits its place in line: MAX_QUEUED - 1 turns after the next
    assert lookups.next_ask_ms(users[-2]) == stamp + MAX_QUEUED * REPEAT_GAP_MS
    last = users[-1]
    assert lookups.next_ask_ms(last) == stamp + LONG_MISS_WAIT_MS // 2
    clock.advance(LONG_MISS_WAIT_MS // 2 - 1)
    assert not await lookups.find_routine(last)
    assert last not in dht.asked


async def test_a_user_never_missed_walks_before_users_that_missed() -> None:
    """SPEC §13.5: with every slot taken, the next free one goes to the waiting user with the
    fewest misses (a real member before the group's absent ones, known nowhere), in arrival
    order among equals."""
    clock, dht = FakeClock(), _Dht()
    lookups = _lookups(dht, clock)
    absent = [UserId(bytes([n]) * 32) for n in range(3, 4 + LOOKUPS_AT_ONCE)]
    missed = absent[-1]
    async with asyncio.timeout(5):
        assert not await lookups.find_routine(missed)
        clock.advance(RETRY_AFTER_MISS_MS)
        dht.release = asyncio.Event()
        dht.asked.clear()
        walks = [
            asyncio.create_task(lookups.find_routine(user)) for user in absent[:LOOKUPS_AT_ONCE]
        ]
        # its turn is now: waits for a slot
        again = asyncio.create_task(lookups.find_routine(missed))
        for _ in range(10):
            await asyncio.sleep(0)
        dht.homes.add(ALICE)
        fresh = asyncio.create_task(lookups.find_routine(ALICE))  # arrives last, never missed
        for _ in range(10):
            await asyncio.sleep(0)
        assert dht.asked == absent[:LOOKUPS_AT_ONCE]
        dht.release.set()
        assert await fresh
        await asyncio.gather(again, *walks)
    assert dht.asked[LOOKUPS_AT_ONCE] == ALICE  # the first slot freed went to alice
    assert sorted(dht.asked) == sorted([*absent, ALICE])


async def test_a_walk_that_runs_too_long_is_a_miss() -> None:
    clock, dht = FakeClock(), _Dht()
    dht.release = asyncio.Event()  # never set: the walk hangs
    lookups = _lookups(dht, clock, walk_timeout_s=0.05)
    async with asyncio.timeout(5):
        assert not await lookups.find(ALICE)
        assert not await lookups.find(ALICE)  # a miss: backed off, not asked again
    assert dht.asked == [ALICE]


async def test_a_record_learnt_while_waiting_for_a_slot_needs_no_walk() -> None:
    """SPEC §13.5: a member's lookup queued behind the absent members' walks is answered
    without a walk once a record of theirs came otherwise (a hello retried, presence)."""
    clock, dht = FakeClock(), _Dht()
    held: dict[UserId, int] = {}
    lookups = _lookups(dht, clock, issued_ms=held.get)
    absent = [UserId(bytes([n]) * 32) for n in range(3, 3 + LOOKUPS_AT_ONCE)]
    async with asyncio.timeout(5):
        dht.release = asyncio.Event()
        walks = [asyncio.create_task(lookups.find(user)) for user in absent]
        waiting = asyncio.create_task(lookups.find(ALICE))
        for _ in range(10):
            await asyncio.sleep(0)
        assert dht.asked == absent  # every slot taken: alice waits
        held[ALICE] = 1  # her home's hello came through meanwhile
        dht.release.set()
        assert await waiting
        await asyncio.gather(*walks)
        assert await lookups.find(ALICE)  # held: answered at once
    assert ALICE not in dht.asked
    assert lookups.asked == LOOKUPS_AT_ONCE


async def test_a_held_record_is_refreshed_from_the_dht_once_a_gap() -> None:
    """SPEC §13.5: a lookup asked while a record is held (an envelope from a device it does
    not list) walks for a newer one; it answered at once without a walk, so a device linked
    since was never learnt from the DHT. Again within REFRESH_GAP_MS: no walk; a record
    newer than the one held when asked, learnt while it waited for a slot: no walk."""
    clock, dht = FakeClock(), _Dht()
    held: dict[UserId, int] = {BOB: 1}
    lookups = _lookups(dht, clock, issued_ms=held.get)
    dht.homes.add(BOB)
    assert await lookups.find(BOB)
    assert dht.asked == [BOB]  # walked, though a record was held
    clock.advance(REFRESH_GAP_MS - 1)
    assert await lookups.find(BOB)
    assert dht.asked == [BOB]  # refreshed lately: what the DHT held then is what we hold
    clock.advance(1)
    assert await lookups.find(BOB)
    assert dht.asked == [BOB, BOB]
    assert lookups.asked == 2
