"""Filling gaps in a sender's sequence by asking other homes (SPEC §26).

A sender's envelopes that arrive after a missing number wait (SPEC §8). The sender's retries or
gossip usually bring the missing one within milliseconds; a gap still open after a grace period
means the sender's node may be gone, so this worker asks, in turn, the sender user's homes, our
own user's other homes and the homes of the room's other members, and feeds each answer through
the receive path, which verifies every envelope. A gap is never skipped: one that no one can
fill stays open and is asked about again, less and less often (SPEC §11.5 backoff).

While no sender's envelopes are held back there is no gap, and the fetcher sleeps. Its wake
source is the `StoreOutcomes` flow (`after_batch`, subscribed by the wiring): the release order
holds an envelope back only inside an arrival batch, and `Receiver` publishes every such
batch's outcome once it committed, so no backstop look is needed (a failed batch fail-stops the
node). An idle node looked 2.7 times a second.

State: when each open gap is next asked about, and the wake-up event (event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.fetch import FetchService
from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.delivery.receiver import Receiver
from hearthmesh.node.delivery.release_order import ReleaseOrder, SenderGap
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.protocol.backoff import next_attempt_ms
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.fetch import MAX_FETCH_RANGE, FetchRequest, answer_batch
from hearthmesh.protocol.identity import DeviceId, Rng, UserId
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["FETCH_TIMEOUT_S", "GapFetcher"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S: Final = 5.0
"""How long one peer may take to answer before the next is asked."""


@dataclass(slots=True)
class _Open:
    """When one sender's open gap is next asked about, and after how many fruitless rounds."""

    due_ms: int
    attempts: int = 0


class GapFetcher:
    """Watches the release order for gaps and fills them from other homes."""

    def __init__(
        self,
        *,
        release: ReleaseOrder,
        fetch: FetchService,
        receiver: Receiver,
        links: PeerLinks,
        store: AsyncStore,
        rooms: RoomRegistry,
        directory: HomeDirectory,
        clock: Clock,
        rng: Rng,
        user: UserId,
        peer_id: str,
        sibling_peers: Callable[[], frozenset[str]],
        grace_ms: int,
    ) -> None:
        self._release = release
        self._fetch = fetch
        self._receiver = receiver
        self._links = links
        self._store = store
        self._rooms = rooms
        self._directory = directory
        self._clock = clock
        self._rng = rng
        self._user = user
        self._peer_id = peer_id
        self._sibling_peers = sibling_peers
        self._grace_ms = grace_ms
        self._open: dict[tuple[RoomId, DeviceId], _Open] = {}
        self._held_back = asyncio.Event()
        """Set by `after_batch` when a committed batch left envelopes held back."""
        self.filled = 0
        """Envelopes stored from fetch answers (status and tests)."""

    def after_batch(self, _outcome: StoreOutcome) -> None:
        """A store batch committed (a `StoreOutcomes` reaction): wake if envelopes are held
        back, so a gap may be open."""
        if self._release.held():
            self._held_back.set()

    async def run(self) -> None:
        """Look for gaps a few times per grace period while envelopes are held back, asleep
        while none are, until cancelled."""
        poll_s = max(self._grace_ms // 4, 50) / 1000
        while True:
            if not self._release.held():
                self._open.clear()
                self._held_back.clear()
                await self._held_back.wait()
            await asyncio.sleep(poll_s)
            await self.check()

    async def check(self) -> None:
        """One look: note new gaps, forget closed ones, fetch those due."""
        if not self._release.held():
            # A gap holds a later envelope back: none held, none open. Read on the loop, where
            # the batches change it; only a look that may find one pays a write batch's hop.
            self._open.clear()
            return
        gaps = await self._store.run(self._release.gaps)
        now = self._clock.now_ms()
        current = {(gap.room, gap.device): gap for gap in gaps}
        for sender in self._open.keys() - current.keys():
            del self._open[sender]  # filled: by the sender, gossip, sync or us
        for sender, gap in current.items():
            state = self._open.setdefault(sender, _Open(now + self._grace_ms))
            if now < state.due_ms:
                continue
            if await self._fill(gap):
                state.attempts = 0
                state.due_ms = self._clock.now_ms()  # progress: look again at once
            else:
                state.attempts += 1  # no one had it: ask less and less often, never give up
                now = self._clock.now_ms()
                backoff = next_attempt_ms(state.attempts, now, self._rng)
                state.due_ms = max(backoff, now + self._grace_ms)
                log.info(
                    "gap %d..%d of %s in room %s still open after %d rounds",
                    gap.first,
                    gap.last,
                    gap.device.hex()[:12],
                    gap.room.hex()[:12],
                    state.attempts,
                )

    async def _fill(self, gap: SenderGap) -> bool:
        """Ask one peer after another until the gap is filled; True if anything was stored."""
        progress = False
        for peer, owner in await self._candidates(gap):
            request = FetchRequest(
                room=gap.room,
                sender_device=gap.device,
                first_seq=gap.first,
                last_seq=min(gap.last, gap.first + MAX_FETCH_RANGE - 1),
            )
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_S):
                    if not await self._links.reach(peer, self._directory.addresses(owner)):
                        continue
                    answer = await self._fetch.fetch(peer, request)
                batch = answer_batch(request, answer, self._user)
                if not batch.items:
                    continue
                results = await self._receiver.accept_batch(
                    batch, peer=peer, from_sibling=peer in self._sibling_peers(), fetched=True
                )
            except (HearthError, OSError, TimeoutError) as exc:
                log.info("fetch of a gap from %s failed: %s", peer[-8:], exc)
                continue
            stored = sum(r.status is AckStatus.STORED for r in results)
            self.filled += stored
            progress = progress or stored > 0
            left = await self._gap_of(gap.room, gap.device)
            # closed or moved on without a store: numbers from before our joining point
            progress = progress or left is None or left.first > gap.first
            if left is None:
                break
            gap = left  # partly filled (or an answer cut at its size budget): ask for the rest
        return progress

    async def _gap_of(self, room: RoomId, device: DeviceId) -> SenderGap | None:
        gaps = await self._store.run(self._release.gaps)
        return next((g for g in gaps if (g.room, g.device) == (room, device)), None)

    async def _candidates(self, gap: SenderGap) -> list[tuple[str, UserId]]:
        """(peer, whose home) to ask, in order: the sender's homes, ours, other members'."""
        members = await self._store.run(self._rooms.members, self._store.store, gap.room)
        chosen: dict[str, UserId] = {}
        for owner in (gap.user, self._user, *sorted(members - {gap.user, self._user})):
            own = owner == self._user
            homes = sorted(self._sibling_peers()) if own else self._directory.homes(owner)
            for peer in homes:
                if peer != self._peer_id:
                    chosen.setdefault(peer, owner)
        return list(chosen.items())
