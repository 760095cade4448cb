"""The periodic purge (SPEC §11.5.4): relay TTL, history retention, stale directory entries.

Runs in the node's task group. Each pass calls `Store.purge` in bounded batches, one write
transaction each on the store's thread, and yields to the event loop between batches, so a big
backlog (a node back after a month away) never blocks the loop; long passes log progress.
State: none beyond its settings; what a pass removes is the store's, and when the next pass
runs is its task's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["PROGRESS_EVERY_BATCHES", "PurgePass", "PurgeService"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_BATCHES: Final = 10
"""A pass that takes more batches than this logs its progress every so many batches."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgePass:
    """What one pass removed."""

    events: int
    relay_entries: int
    directory_entries: int
    batches: int


class PurgeService:
    """Purges every `interval_ms` (the first pass at start); `run` until cancelled."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        directory: HomeDirectory,
        clock: Clock,
        interval_ms: int,
        batch: int,
        retention_ms: int | None,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._interval_s = interval_ms / 1000
        self._batch = batch
        self._retention_ms = retention_ms
        self.passes = 0
        """Passes completed since start."""
        self.removed = 0
        """Events, relay entries and directory entries removed since start."""

    async def run(self) -> None:
        """Purge now and then every interval, until cancelled."""
        while True:
            await self.purge_once()
            await asyncio.sleep(self._interval_s)

    async def purge_once(self) -> PurgePass:
        """One pass: batches until a batch removes nothing (or less than a full batch)."""
        events = relay_entries = batches = 0
        while True:
            report = await self._store.run(
                self._store.store.purge,
                now_ms=self._clock.now_ms(),
                retention_ms=self._retention_ms,
                limit=self._batch,
            )
            batches += 1
            events += report.events
            relay_entries += report.relay_entries
            if batches % PROGRESS_EVERY_BATCHES == 0:
                log.info(
                    "purge under way: %d events and %d relay entries removed in %d batches",
                    events,
                    relay_entries,
                    batches,
                )
            if report.events < self._batch and report.relay_entries < self._batch:
                break
            await asyncio.sleep(0)  # let the loop (API, deliveries) run between batches
        directory_entries = await self._store.run(
            self._directory.purge, self._store.store, now_ms=self._clock.now_ms()
        )
        self.passes += 1
        self.removed += events + relay_entries + directory_entries
        if events or relay_entries or directory_entries:
            log.info(
                "purged %d events, %d relay entries, %d directory entries",
                events,
                relay_entries,
                directory_entries,
            )
        return PurgePass(
            events=events,
            relay_entries=relay_entries,
            directory_entries=directory_entries,
            batches=batches,
        )
