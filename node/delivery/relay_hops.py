"""Hand-offs to relays of batches whose homes are away, one hop per relay for many recipients
(SPEC §11.2.3, §11.5.2, §11.7).

A group message finds each absent member's home down, and the outbox hands each of their
batches to a relay. A DELIVER item names its recipient, so one batch may carry items for many
users: the hand-offs that wait together go to a relay in as few batches as the bounds allow
(`BATCH_ENTRIES` items, `BATCH_BYTES`), instead of one hop per member. A message to a group
with 1,000 absent members is then a handful of hops, not a thousand round trips each verified
and acked on its own. A hand-off is best effort (the rows stay in the sender's outbox, SPEC
§11.4.1), so nothing waits for it.

State: the hand-offs waiting for the next hop, and whether a hop is under way; counts of hops
and items (status and tests).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hearthmesh.node.delivery.peer_link import BATCH_BYTES, DeliveryFailed
from hearthmesh.protocol.delivery import Ack, AckStatus, BatchItem
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.outbox import BATCH_ENTRIES

__all__ = ["HandOff", "RelayHops", "merge_hand_offs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandOff:
    """One destination's batch for a relay, as `peer_link.build_batch` made it."""

    recipient: UserId
    homes: tuple[str, ...]
    """The recipient's homes: never chosen as its relay."""
    certificates: list[bytes]
    items: list[BatchItem]


def merge_hand_offs(hand_offs: list[HandOff]) -> list[tuple[list[bytes], list[BatchItem]]]:
    """The hand-offs' items as few batches as the bounds allow, in order, each with the
    certificates its items name (each certificate once per batch)."""
    batches: list[tuple[list[bytes], list[BatchItem]]] = []
    certificates: list[bytes] = []
    index_of: dict[bytes, int] = {}
    items: list[BatchItem] = []
    size = 0
    for hand_off in hand_offs:
        for item in hand_off.items:
            if items and (len(items) == BATCH_ENTRIES or size + len(item.wire) > BATCH_BYTES):
                batches.append((certificates, items))
                certificates, index_of, items, size = [], {}, [], 0
            certificate = hand_off.certificates[item.certificate]
            if certificate not in index_of:
                index_of[certificate] = len(certificates)
                certificates.append(certificate)
            items.append(BatchItem(index_of[certificate], item.recipient, item.wire))
            size += len(item.wire)
    if items:
        batches.append((certificates, items))
    return batches


class RelayHops:
    """Gathers hand-offs and delivers them to relays, one hop at a time."""

    def __init__(
        self,
        *,
        deliver: Callable[[str, list[bytes], list[BatchItem]], Awaitable[Ack]],
        choose: Callable[[tuple[str, ...]], Awaitable[list[str]]],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        """`deliver` is `PeerLinks.deliver`, `choose` is `RelayChooser.choose`, and `spawn`
        runs the hop in the caller's task group (the outbox's, while it runs)."""
        self._deliver = deliver
        self._choose = choose
        self._spawn = spawn
        self._waiting: list[HandOff] = []
        self._hopping = False
        self.hops = 0
        """Batches delivered to relays."""
        self.items = 0
        """Items those batches carried."""

    @property
    def busy(self) -> bool:
        """A hop is under way, or hand-offs wait for one."""
        return self._hopping or bool(self._waiting)

    def hand_off(self, hand_off: HandOff) -> None:
        """Queue a batch for a relay; it goes with the others waiting, at the next hop."""
        self._waiting.append(hand_off)
        if not self._hopping:
            self._hopping = True
            self._spawn(self._hop_all())

    async def _hop_all(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                by_homes: dict[tuple[str, ...], list[HandOff]] = {}
                for hand_off in waiting:  # usually one key: users with no home known
                    by_homes.setdefault(hand_off.homes, []).append(hand_off)
                for homes, hand_offs in by_homes.items():
                    for certificates, items in merge_hand_offs(hand_offs):
                        await self._hop(homes, certificates, items)
        finally:
            self._hopping = False

    async def _hop(
        self, homes: tuple[str, ...], certificates: list[bytes], items: list[BatchItem]
    ) -> None:
        for relay in await self._choose(homes):  # on trust, not id order (SPEC §11.7)
            try:
                ack = await self._deliver(relay, certificates, items)
            except DeliveryFailed:
                continue
            self.hops += 1
            self.items += len(items)
            held = sum(r.status in (AckStatus.RELAYED, AckStatus.STORED) for r in ack.results)
            log.info("homes unreachable: %d of %d relayed via %s", held, len(items), relay[-8:])
            return
        log.info("homes unreachable and no relay took %d items", len(items))
