"""Looking up other users' home records in the DHT for the node's own needs (SPEC §13.5).

The outbox asks for a recipient's home each time it has a batch for a user whose home it does
not know, and the media fetcher for each reference. Asking the DHT every time would send one
network walk per batch for as long as the user stays unknown, so a lookup that found nothing
is not repeated before the §11.5 backoff for that user (growing with consecutive misses), and
callers asking for the same user at once share one lookup. A user missed `LONG_MISS_AFTER` times
in a row (16-32 s of §11.5 delays, and the walks) is known nowhere for now: asked again only
after `LONG_MISS_WAIT_MS` (SPEC §13.5). A group's absent members are hundreds of such users; at the
§11.5 cap each was walked for once a minute by every home holding their rows, a DHT walk per
user per minute that grew with the group's absent members, not with anything sent. A record
learnt by hello, presence or another lookup needs no lookup (its probe runs at once, §11.5.2),
and a lookup that waited for a walk slot while such a record came is answered without a walk.
At most `LOOKUPS_AT_ONCE` walks run at a time: a group's absent members are hundreds of users
looked up together, and as many concurrent walks opened more streams to each peer than its
slots allow (SPEC §10.4), so the peers reset them and banned this node.

State: per user, the misses in a row and when to ask again, the lookups running, and the
slots of the walks under way with the users waiting for one (fewest misses first).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.protocol.backoff import next_attempt_ms
from hearthmesh.protocol.identity import Rng, UserId

__all__ = [
    "LONG_MISS_AFTER",
    "LONG_MISS_WAIT_MS",
    "LOOKUPS_AT_ONCE",
    "MAX_REMEMBERED_MISSES",
    "WALK_TIMEOUT_S",
    "HomeLookups",
]

LOOKUPS_AT_ONCE: Final = 4
"""DHT walks under way at once; the others wait their turn (each walk opens streams to several
peers, and a peer resets what passes its per-peer slots)."""

MAX_REMEMBERED_MISSES: Final = 10_000
"""Users whose misses are remembered; the oldest are forgotten first (and asked again)."""

LONG_MISS_AFTER: Final = 8
"""Consecutive misses after which a user counts as known nowhere (SPEC §13.5): the §11.5
delays before it add up to 16-32 s, and the walks take their time."""

LONG_MISS_WAIT_MS: Final = 15 * 60_000
"""How long a user known nowhere waits for its next lookup (uniform in its second half)."""

WALK_TIMEOUT_S: Final = 10.0
"""A walk still going after this long counts as a miss: on a loaded mesh the walk for a user
known nowhere ran on through every peer's timeouts, holding a slot that others waited for."""


class HomeLookups:
    """`find(user)`: a shared, backed-off `lookup(user)`; True once a home record was adopted."""

    def __init__(
        self,
        lookup: Callable[[UserId], Awaitable[bool]],
        *,
        clock: Clock,
        rng: Rng,
        known: Callable[[UserId], bool] = lambda _user: False,
        walk_timeout_s: float = WALK_TIMEOUT_S,
    ) -> None:
        """`known(user)`: a record of the user's homes is held already (the directory)."""
        self._lookup = lookup
        self._known = known
        self._walk_timeout_s = walk_timeout_s
        self._clock = clock
        self._rng = rng
        self._misses: OrderedDict[UserId, tuple[int, int]] = OrderedDict()
        """user -> (consecutive misses, earliest time to ask again)."""
        self._running: dict[UserId, asyncio.Future[bool]] = {}
        self._walks = _WalkSlots(LOOKUPS_AT_ONCE)
        self.asked = 0
        """Lookups actually sent to the DHT (for tests and status)."""

    async def find(self, user: UserId) -> bool:
        """Look `user`'s home up unless a recent miss says not yet; False if none was found."""
        running = self._running.get(user)
        if running is not None:
            return await asyncio.shield(running)
        missed = self._misses.get(user)
        if missed is not None and self._clock.now_ms() < missed[1]:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[user] = future
        try:
            await self._walks.take(0 if missed is None else missed[0])
            try:
                if self._known(user):  # learnt while it waited for a slot (a hello retried)
                    found = True
                else:
                    self.asked += 1
                    async with asyncio.timeout(self._walk_timeout_s):
                        found = await self._lookup(user)
            except TimeoutError:
                found = False  # a miss: the slot goes to the next user
            finally:
                self._walks.give_back()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning if nobody else was waiting
            raise
        else:
            future.set_result(found)
            self._note(user, found)
            return found
        finally:
            del self._running[user]

    def _note(self, user: UserId, found: bool) -> None:
        if found:
            self._misses.pop(user, None)
            return
        misses = self._misses.pop(user, (0, 0))[0] + 1
        now_ms = self._clock.now_ms()
        if misses >= LONG_MISS_AFTER:
            half = LONG_MISS_WAIT_MS // 2
            again_ms = now_ms + half + int.from_bytes(self._rng(4), "big") % (half + 1)
        else:
            again_ms = next_attempt_ms(misses, now_ms, self._rng)
        self._misses[user] = (misses, again_ms)
        while len(self._misses) > MAX_REMEMBERED_MISSES:
            self._misses.popitem(last=False)


class _WalkSlots:
    """At most `slots` walks at once; a waiting user with fewer misses goes first, in arrival
    order among equals. A group's absent members are hundreds of users known nowhere: in
    arrival order a real member's walk waited behind every one of theirs, and its rows with it
    (a 25-node group of 256 where two homes had not folded the group after 8 minutes)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        """A heap of (misses, arrival, wake-up)."""
        self._arrivals = itertools.count()

    async def take(self, misses: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (misses, next(self._arrivals), wake))
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
