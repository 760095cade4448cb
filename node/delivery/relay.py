"""Store-and-forward: hand relayed envelopes to their recipient's home node when it is back.

The inbox puts envelopes for users who do not live here into the relay inbox (quota'd, with a
TTL); this forwarder delivers them with ordinary DELIVER batches and drops each one once the
home node's signed ack says stored (SPEC §11.4).

A recipient no record names (a group's absent member) has no home to dial: it is not tried at
all, neither at each poll nor at each wake, until its record comes (`wake` with its user).
Trying it read its held envelopes in a store write batch each time, and a home relaying for a
group's ~1,000 absent members spent most of its loop on that, every second (SPEC §11.2.3).

While it holds nothing it sleeps until the inbox relays something (`hold`, told by
`AfterStore` once the batch committed): there is nothing a poll could find.

State: the recipients held for, those due at the next pass, and the count forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.peer_link import DeliveryFailed, PeerLinks, build_batch
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import RelayEntry
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["RelayForwarder"]

log = logging.getLogger(__name__)

_BATCH: Final = 256


class RelayForwarder:
    """Forwards the relay inbox; owned by the node's task group (`run` until cancelled)."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        links: PeerLinks,
        directory: HomeDirectory,
        clock: Clock,
        poll_ms: int,
    ) -> None:
        self._store = store
        self._links = links
        self._directory = directory
        self._clock = clock
        self._poll_s = poll_ms / 1000
        self._wake = asyncio.Event()
        self.waiting: set[UserId] = set()
        """Recipients this node holds envelopes for."""
        self._due: set[UserId] = set()
        """Recipients to try at the next pass that a wake starts (before the poll's)."""
        self.forwarded = 0
        self.tries = 0
        """Recipients tried (their held envelopes read): status and tests."""

    def hold(self, recipients: set[UserId]) -> None:
        """The inbox relayed envelopes for `recipients`."""
        self.waiting |= recipients
        self._due |= recipients
        self._wake.set()

    def wake(self, users: Iterable[UserId]) -> None:
        """A record of `users` came (a peer connected or announced itself): their homes may
        be reachable now; those held for are tried at once."""
        due = self.waiting.intersection(users)
        if due:
            self._due |= due
            self._wake.set()

    async def run(self) -> None:
        """Forward until cancelled: each recipient with a home known is tried every poll, and
        at once when held for or woken."""
        everyone = True
        while True:
            self._wake.clear()
            due, self._due = (set(self.waiting) if everyone else self._due), set()
            for recipient in due:
                if recipient in self.waiting and self._directory.homes(recipient):
                    # else nothing to dial: its record wakes it
                    self.tries += 1
                    if await self._forward(recipient):
                        self.waiting.discard(recipient)
            everyone = True
            with contextlib.suppress(TimeoutError):
                # holding nothing, nothing to poll: `hold` wakes it (an idle node woke each second)
                async with asyncio.timeout(self._poll_s if self.waiting else None):
                    await self._wake.wait()
                    everyone = False

    async def _forward(self, recipient: UserId) -> bool:
        """Deliver what is held for `recipient`; True when nothing is left."""
        entries = await self._store.run(
            self._store.store.relay_take, recipient, now_ms=self._clock.now_ms(), limit=_BATCH
        )
        if not entries:
            return True
        for home in self._directory.homes(recipient):
            if not await self._links.reach(home, self._directory.addresses(recipient)):
                continue
            if await self._deliver(recipient, home, entries):
                return len(entries) < _BATCH and await self._forward(recipient)
        return False

    async def _deliver(self, recipient: UserId, home: str, entries: list[RelayEntry]) -> bool:
        certificates, items, carried, _ = build_batch(
            entries, recipient, self._directory.certificate
        )
        try:
            ack = await self._links.deliver(home, certificates, items)
        except DeliveryFailed as exc:
            log.info("relay to %s failed: %s", home[-8:], exc)
            return False
        done = [
            e.message_id
            for e, r in zip(carried, ack.results, strict=True)
            if r.status in (AckStatus.STORED, AckStatus.DUPLICATE, AckStatus.REJECTED)
        ]
        await self._store.run(self._store.store.relay_ack, recipient, done)
        self.forwarded += len(done)
        return len(done) == len(carried)
