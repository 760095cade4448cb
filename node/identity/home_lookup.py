"""Looking up other users' home records in the DHT for the node's own needs (SPEC §13.5).

The outbox asks for a recipient's home each time it probes a user whose home it does not know,
the media fetcher for each reference, the room sender for each member it has no record of.
Asking the DHT every time would cost a lookup per probe for as long as the user stays unknown;
a group's absent members are hundreds of such users, each owed rows by every home that sent to
the group, and their lookups were 72 % of a home's busy time at 10 nodes and 1,024 members.
So, per user: a lookup that found nothing is asked again once, `RETRY_AFTER_MISS_MS` later (a
home coming up publishes its record 10-30 s after its first peer, SPEC §13.4); after
`LONG_MISS_AFTER` misses in a row the user is known nowhere, asked again only after
`LONG_MISS_WAIT_MS`. Node-wide, every lookup after a miss, and every first lookup past
`FIRST_LOOKUP_BURST` (refilled one a turn), takes turns `REPEAT_GAP_MS` apart. Users waiting
for a turn queue: fewest misses first; among users never walked the latest asked first, among
users missed in the order asked. Handed out in the order asked, a first send's ~1,000 absent
members booked a turn each, and a user asked after them (a member whose hello failed, rows
waiting) waited all of theirs: 8 hours. A user takes its turn when it asks at it
(`next_ask_ms`); one whose caller is gone gives its place up after a turn. A group's absent
members then cost a home one burst and a lookup a turn, whatever their number: each home that
sent to a 1,024-member group walked twice for each of its ~1,000 absent members within a
minute, then once a second for good; the creator,
whose walks start at the ADDs, spent 6-9 times an idle member's CPU at 25 nodes, and the
walks were 4-11 % of a 50-node workload's samples (SPEC §20.6). A returning member's home is
learnt at once by hello or presence (§13.3, §14.2), by a lookup within `LONG_MISS_WAIT_MS` or
one turn per user waiting, whichever is longer. Callers asking for one user at once share one
lookup, which runs in a task of its own to its own bound (`WALK_TIMEOUT_S`): a caller that
stops waiting (a room key's sender gives lookups 3 s) ends its own wait, not the lookup the
others wait on. (It ended it, and with it the outbox's probe that shared it: a 50-node group's
creator kept five real members' welcomes parked for good, their records learnt by hello
minutes before, SPEC §20.6.) A record learnt by hello, presence or another lookup needs no
lookup (its probe runs at once, §11.5.2), and a lookup that waited for a slot while such a
record came is answered without one. A lookup asked while a record is held (it lists no such
device: an envelope from a device it does not list, a key request from a home it does not
name) walks for a newer one, at most once a `REFRESH_GAP_MS` per user: a record held when
asked answered every such lookup at once, without a walk, so a device linked since was never
learnt from the DHT.
At most `LOOKUPS_AT_ONCE` lookups run at a time, users missed fewest times first: a member
whose hello failed must not wait behind hundreds of absent members (SPEC §10.4, §13.5).
A live ask (a need of now: an envelope or a key request from the user, a media reference, a
send that waits on a few members' records) that finds no turn free walks at once while the
live budget lasts (`LIVE_WALK_BURST`, one back each `LIVE_WALK_GAP_MS`), ahead of the queue and
of routine walks waiting for a slot: queued by misses, a real member missed once waited behind
a group's ~974 never-walked absent members, one turn every 30 s (hours), so a home that missed
presence and every hello had no fallback. The budget bounds what strangers' asks can make us
walk, whatever users they name.

State: per user, the misses in a row and when to ask again; when a held record was last
refreshed; the queue of users waiting for a turn and the next turn; the first lookups' and the
live asks' budgets; the lookups running, and the slots of those under way with the users
waiting for one.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from hearthmesh.node.clock import Clock
from hearthmesh.protocol.identity import Rng, UserId

__all__ = [
    "FIRST_LOOKUP_BURST",
    "LIVE_WALK_BURST",
    "LIVE_WALK_GAP_MS",
    "LONG_MISS_AFTER",
    "LONG_MISS_WAIT_MS",
    "LOOKUPS_AT_ONCE",
    "MAX_QUEUED",
    "MAX_REMEMBERED_MISSES",
    "REFRESH_GAP_MS",
    "REPEAT_GAP_MS",
    "RETRY_AFTER_MISS_MS",
    "WALK_TIMEOUT_S",
    "HomeLookups",
]

log = logging.getLogger(__name__)

LOOKUPS_AT_ONCE: Final = 4
"""DHT lookups under way at once; the others wait their turn (each opens streams to several
peers, and a peer resets what passes its per-peer slots)."""

MAX_REMEMBERED_MISSES: Final = 10_000
"""Users whose misses are remembered; the oldest are forgotten first (and asked again)."""

MAX_QUEUED: Final = 10_000
"""Users waiting for a turn (`HomeLookups._turn_for`); past it the last one leaves."""

RETRY_AFTER_MISS_MS: Final = 30_000
"""After a first miss the user is asked again this long later (uniform in its second half):
a home coming up publishes its record 10-30 s after its first peer (SPEC §13.4)."""

LONG_MISS_AFTER: Final = 2
"""Consecutive misses after which a user counts as known nowhere (SPEC §13.5)."""

LONG_MISS_WAIT_MS: Final = 15 * 60_000
"""How long a user known nowhere waits for its next lookup (uniform in its second half)."""

REPEAT_GAP_MS: Final = 30_000
"""Node-wide, lookups after a miss (and first ones past `FIRST_LOOKUP_BURST`) are at least this far
apart: due users queue for the turns (`HomeLookups._turn_for`), so 1,000 absent members cost a
lookup a turn, not 2,000 at once. At 1 s, every home that had sent to a 1,024-member group walked
once a second for good (the creator's idle minute: 5-11 CPU s against a member's 0.8-1.9). At 10 s
those turns were, with the burst, every kad stream a node opened in a workload (1.22 a message per
node at 10 nodes, 3 per walk, each walk a miss: SPEC §20.6); a crowd that large waits hours for its
turns either way, and its members' homes are learnt by hello and presence."""

FIRST_LOOKUP_BURST: Final = 8
"""First lookups (of users never missed) walked at once before the others take turns; one
comes back each `REPEAT_GAP_MS`. A hello or presence teaches a member's record at once
(SPEC §13.3, §14.2); the walks are for records no peer told us of. At 16, a home's first send
to a group of 1,024 spent the 16 on absent members, known nowhere (48 kad streams at once,
SPEC §20.6): a few members whose hello failed are what a burst is for, and 8 is twice the
walks under way at once (`LOOKUPS_AT_ONCE`)."""

LIVE_WALK_BURST: Final = 4
"""Live asks that walk at once past the queue before the others queue; one comes back each
`LIVE_WALK_GAP_MS`. Envelopes from made-up users are live asks too: this is all they can make
us walk (4 walks, then one every 10 s), and each walk still takes one of the `LOOKUPS_AT_ONCE`
slots."""

LIVE_WALK_GAP_MS: Final = 10_000
"""How often a live walk comes back to `LIVE_WALK_BURST`."""

REFRESH_GAP_MS: Final = 60_000
"""A user whose held record a lookup refreshed from the DHT is not walked for again within
this: each envelope from a device its record does not list asks, and a peer sending many
would otherwise cost a walk each."""

WALK_TIMEOUT_S: Final = 10.0
"""A lookup still going after this long counts as a miss: on a loaded mesh a lookup of a user
known nowhere ran on through every peer's timeouts, holding a slot that others waited for."""


@dataclass(slots=True)
class _Missed:
    """What the misses of one user decided."""

    misses: int
    """Consecutive misses."""
    again_ms: int
    """Not asked again before this."""


class HomeLookups:
    """`find(user)`: a shared, backed-off `lookup(user)`; True once a home record was adopted."""

    def __init__(
        self,
        lookup: Callable[[UserId], Awaitable[bool]],
        *,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        clock: Clock,
        rng: Rng,
        issued_ms: Callable[[UserId], int | None] = lambda _user: None,
        walk_timeout_s: float = WALK_TIMEOUT_S,
    ) -> None:
        """`spawn(work, name)` runs each lookup (the node's supervisor); `issued_ms(user)`:
        when the record of the user's homes held was issued, None if none is (the
        directory)."""
        self._lookup = lookup
        self._spawn = spawn
        self._issued_ms = issued_ms
        self._walk_timeout_s = walk_timeout_s
        self._clock = clock
        self._rng = rng
        self._misses: OrderedDict[UserId, _Missed] = OrderedDict()
        self._refreshed: OrderedDict[UserId, int] = OrderedDict()
        """When each user's held record was last refreshed by a walk."""
        self._next_turn_ms = 0
        """The next turn (`REPEAT_GAP_MS` after the last one taken)."""
        self._queue: list[tuple[int, int, int, UserId]] = []
        """Users waiting for a turn, sorted: (misses, asked at (negated if never missed),
        arrival, user)."""
        self._queued: dict[UserId, tuple[int, int, int, UserId]] = {}
        self._arrivals = itertools.count()
        self._first_walks = _Budget(FIRST_LOOKUP_BURST, REPEAT_GAP_MS)
        """First lookups (users never missed nor queued) that may walk at once."""
        self._live_walks = _Budget(LIVE_WALK_BURST, LIVE_WALK_GAP_MS)
        """Live asks that may walk at once past the queue."""
        self._running: dict[UserId, asyncio.Future[bool]] = {}
        self._walks = _WalkSlots(LOOKUPS_AT_ONCE)
        self.asked = 0
        """Lookups actually sent to the DHT (for tests and status)."""

    async def find(self, user: UserId, *, live: bool = True) -> bool:
        """Look `user`'s home up unless a recent miss says not yet; False if none was found.
        Cancelling a caller ends its wait alone: the lookup goes on for the others. A `live`
        ask (a need of this moment: an envelope or a key request from the user, a media
        reference) walks at once while the live budget lasts (`LIVE_WALK_BURST`), else moves a
        user waiting for a turn to the front of those with its misses."""
        running = self._running.get(user)
        if running is None:
            held_ms = self._issued_ms(user)
            if held_ms is not None and self._refreshed_lately(user):
                return True  # what the DHT held a moment ago: the record we hold
            missed = self._misses.get(user)
            now_ms = self._clock.now_ms()
            if missed is not None and now_ms < missed.again_ms:
                return False
            misses = 0 if missed is None else missed.misses
            first = missed is None and user not in self._queued
            walk_now = first and self._first_walks.take(now_ms)
            live_now = not walk_now and live and self._live_walks.take(now_ms)
            if live_now:
                self._unqueue(user)
            elif not walk_now and not self._turn_for(user, misses, live):
                return False
            running = asyncio.get_running_loop().create_future()
            self._running[user] = running
            rank = -1 if live_now else misses  # a live walk's slot comes before routine ones
            try:
                self._spawn(self._walk(user, rank, held_ms, running), f"lookup-{user.hex()[:8]}")
            except BaseException:  # not started (the node stops): no one may wait on it
                del self._running[user]
                raise
        return await asyncio.shield(running)

    async def find_routine(self, user: UserId) -> bool:
        """`find`, asked again and again for every user alike (the outbox's probes, the room key's
        sender for every member it has no record of): it keeps a waiting user's place."""
        return await self.find(user, live=False)

    async def _walk(
        self, user: UserId, rank: int, held_ms: int | None, answer: asyncio.Future[bool]
    ) -> None:
        """The one lookup of `user` under way: a slot (`rank`: its misses, -1 if live), then
        the walk (or the record learnt while it waited: newer than `held_ms`, the one held
        when asked); its outcome goes to every caller through `answer`."""
        try:
            await self._walks.take(rank)
            try:
                issued_ms = self._issued_ms(user)
                if issued_ms is not None and issued_ms != held_ms:  # a hello retried, presence
                    found = True
                    self._note_refresh(user)  # as fresh as a walk would have made it
                else:
                    self.asked += 1
                    if held_ms is not None:
                        self._note_refresh(user)
                    async with asyncio.timeout(self._walk_timeout_s):
                        found = await self._lookup(user)
            except TimeoutError:
                found = False  # a miss: the slot goes to the next user
            finally:
                self._walks.give_back()
        except asyncio.CancelledError:  # the node stops
            answer.cancel()
            raise
        except Exception as exc:  # the callers' to handle, as if they had walked
            answer.set_exception(exc)
            answer.exception()  # retrieved: no warning if every caller stopped waiting
        else:
            answer.set_result(found)
            self._note(user, found)
        finally:
            del self._running[user]

    def next_ask_ms(self, user: UserId) -> int:
        """The earliest time `find(user)` may ask the DHT (0: now); asking before gets False
        at no cost. A user known nowhere may be given a later turn when it is asked then."""
        key = self._queued.get(user)
        if key is not None:  # its place in the queue, if no one is asked ahead of it meanwhile
            return self._next_turn_ms + bisect.bisect_left(self._queue, key) * REPEAT_GAP_MS
        missed = self._misses.get(user)
        return 0 if missed is None else missed.again_ms

    def _refreshed_lately(self, user: UserId) -> bool:
        at_ms = self._refreshed.get(user)
        return at_ms is not None and self._clock.now_ms() - at_ms < REFRESH_GAP_MS

    def _note_refresh(self, user: UserId) -> None:
        self._refreshed.pop(user, None)
        self._refreshed[user] = self._clock.now_ms()
        while len(self._refreshed) > MAX_REMEMBERED_MISSES:
            self._refreshed.popitem(last=False)

    def _unqueue(self, user: UserId) -> None:
        key = self._queued.pop(user, None)
        if key is not None:
            self._queue.remove(key)

    def _turn_for(self, user: UserId, misses: int, live: bool) -> bool:
        """Does `user` (waiting on a miss, or past the burst) take the turn free now? Users
        waiting for one queue by fewest misses; users never walked latest asked first (the crowd
        asked once at a first send goes behind a user asked since), users missed in the order
        asked (none waits behind an endless line of later misses) after those asked live. The
        user at the head takes the next turn when it asks; a user further back takes it once
        each one ahead let a whole turn pass unasked (their callers gone: they lose their
        place)."""
        now_ms = self._clock.now_ms()
        if live:  # asked again for a need of now: to the front
            self._unqueue(user)
        key = self._queued.get(user)
        if key is None:
            if not self._queue:
                self._next_turn_ms = max(self._next_turn_ms, now_ms)
            # a new need first; routine retries in turn, behind live asks
            order_ms = -now_ms if misses == 0 or live else now_ms
            key = self._queued[user] = (misses, order_ms, next(self._arrivals), user)
            bisect.insort(self._queue, key)
            self._bound_queue()
            if user not in self._queued:
                return False
        rank = bisect.bisect_left(self._queue, key)
        if now_ms < self._next_turn_ms + rank * REPEAT_GAP_MS:
            return False
        for lapsed in self._queue[: rank + 1]:
            del self._queued[lapsed[3]]
        del self._queue[: rank + 1]
        self._next_turn_ms = now_ms + REPEAT_GAP_MS
        return True

    def _bound_queue(self) -> None:
        """Past `MAX_QUEUED`, the last user (most misses, asked longest ago) leaves the queue
        and is not asked again for half a `LONG_MISS_WAIT_MS`: its next ask queues it anew."""
        while len(self._queue) > MAX_QUEUED:
            misses, _, _, dropped = self._queue.pop()
            del self._queued[dropped]
            self._misses.pop(dropped, None)
            self._misses[dropped] = _Missed(misses, self._clock.now_ms() + LONG_MISS_WAIT_MS // 2)
            self._bound_misses()

    def _note(self, user: UserId, found: bool) -> None:
        held = self._misses.pop(user, None)
        if found:
            if held is not None:  # what a member's deliveries waited for (SPEC §20.6)
                log.info("home of %s found after %d misses", user.hex()[:12], held.misses)
            return
        misses = 1 if held is None else held.misses + 1
        log.debug("home of %s not found (%d misses)", user.hex()[:12], misses)
        wait_ms = LONG_MISS_WAIT_MS if misses >= LONG_MISS_AFTER else RETRY_AFTER_MISS_MS
        half = wait_ms // 2
        again_ms = self._clock.now_ms() + half + int.from_bytes(self._rng(4), "big") % (half + 1)
        self._misses[user] = _Missed(misses, again_ms)
        self._bound_misses()

    def _bound_misses(self) -> None:
        while len(self._misses) > MAX_REMEMBERED_MISSES:
            self._misses.popitem(last=False)


class _Budget:
    """Walks that may start at once: `burst` of them, one back each `gap_ms`."""

    def __init__(self, burst: int, gap_ms: int) -> None:
        self._burst = burst
        self._gap_ms = gap_ms
        self._left = float(burst)
        self._at_ms = 0
        """`_left` as of this time."""

    def left(self, now_ms: int) -> bool:
        """Is one left now?"""
        return self._refilled(now_ms) >= 1

    def take(self, now_ms: int) -> bool:
        """Take one if one is left."""
        self._left = self._refilled(now_ms)
        self._at_ms = now_ms
        if self._left < 1:
            return False
        self._left -= 1
        return True

    def _refilled(self, now_ms: int) -> float:
        return min(float(self._burst), self._left + (now_ms - self._at_ms) / self._gap_ms)


class _WalkSlots:
    """At most `slots` walks at once; a waiting user with fewer misses goes first (a live
    walk, rank -1, before all), in arrival order among equals. A group's absent members are
    hundreds of users known nowhere: in arrival order a real member's walk waited behind every
    one of theirs, and its rows with it (a 25-node group of 256 where two homes had not folded
    the group after 8 minutes)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        """A heap of (rank: misses, -1 if live; arrival; wake-up)."""
        self._arrivals = itertools.count()

    async def take(self, rank: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._arrivals), wake))
        try:
            await wake
        except asyncio.CancelledError:
            if wake.done() and not wake.cancelled():  # handed the slot, then cancelled
                self.give_back()
            raise

    def give_back(self) -> None:
        while self._waiting:
            wake = heapq.heappop(self._waiting)[2]
            if not wake.done():  # a cancelled waiter's future is done
                wake.set_result(None)
                return
        self._free += 1
