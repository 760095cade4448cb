"""The outbox worker: the guaranteed path of ARCHITECTURE §3 step 4.

It takes due outbox entries (leased, so a crash hands them out again), sends them in batches
to each recipient's home node and retries with backoff until that node's signed ack says
stored. When no home node is reachable, a connected peer relays the batch (store-and-forward),
but only the home node's ack ends a delivery (SPEC §11.4): the entry stays in the outbox. A
destination found unreachable is down (`outages.py`): its entries are parked in the store (new
ones relayed first), and one probe batch tries it again after its backoff, or at once
when one of its homes connects (SPEC §11.5.2). One batch per destination is in flight at a
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.destinations import destination_peer
from hearthmesh.node.delivery.outages import PROBE_MAX_MS, Outages
from hearthmesh.node.delivery.peer_link import DeliveryFailed, PeerLinks, build_batch
from hearthmesh.node.delivery.relay_choice import RelayChooser
from hearthmesh.node.events import DeliveredToHome, NodeEvent
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.backoff import next_attempt_ms
from hearthmesh.protocol.delivery import Ack, AckStatus, BatchItem
from hearthmesh.protocol.envelope import Envelope, MessageId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId, Rng, UserId
from hearthmesh.storage.api import OutboxEntry, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["BATCH_ENTRIES", "LEASE_MS", "OutboxWorker"]

log = logging.getLogger(__name__)

BATCH_ENTRIES: Final = 256
LEASE_MS: Final = 15_000
"""An entry handed out but never settled (a crash) comes due again after this long."""
MAX_QUEUED_ENTRIES: Final = 4 * BATCH_ENTRIES * 4
"""Entries taken from the store and not yet settled, over all destinations (the in-memory bound)."""
SETTLE_EVERY_MS: Final = 50
"""How often acked entries leave the stored outbox (one transaction for all of them)."""
_ALL: Final = 1 << 40
"""`unpark` limit meaning every entry."""


class OutboxWorker:
    """Drains the outbox; owned by the node's task group (`run` until cancelled)."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        relays: RelayChooser,
        links: PeerLinks,
        directory: HomeDirectory,
        keyring: Keyring,
        clock: Clock,
        rng: Rng,
        emit: Callable[[NodeEvent], None],
        poll_ms: int,
        find_home: Callable[[UserId], Awaitable[bool]],
        probe_max_ms: int = PROBE_MAX_MS,
    ) -> None:
        self._store = store
        self._relays = relays
        self._links = links
        self._directory = directory
        self._keyring = keyring
        self._clock = clock
        self._rng = rng
        self._emit = emit
        self._find_home = find_home
        self._poll_s = poll_ms / 1000
        self._wake = asyncio.Event()
        self._queued: dict[bytes, list[OutboxEntry]] = {}
        """Entries taken for each destination whose delivery task is running."""
        self._group: asyncio.TaskGroup | None = None
        self._outages = Outages(clock=clock, rng=rng, probe_max_ms=probe_max_ms)
        self._settled: dict[bytes, list[MessageId]] = {}
        """Acked entries by destination, not yet removed from the stored outbox."""
        self._hand_full = False
        """The loop waits for room in hand: the next batch delivered should wake it."""
        self.delivered = 0
        """Entries acked by a home node (for status and benchmarks)."""

    def wake(self) -> None:
        """New entries are due: look now rather than at the next poll."""
        self._wake.set()

    @property
    def unreachable(self) -> list[bytes]:
        """Destinations down now (SPEC §11.5.2): their deliveries wait parked."""
        return self._outages.down()

    def revive(self, peer_id: str) -> None:
        """`peer_id` connected: a destination down that it is a home of is probed at once."""

        def homed_at(destination: bytes) -> bool:
            sibling = destination_peer(destination)
            if sibling is not None:
                return sibling == peer_id
            return peer_id in self._directory.homes(UserId(destination))

        if self._outages.revive(homed_at):
            self.wake()

    def submit(self, envelope: Envelope, destinations: tuple[bytes, ...]) -> None:
        """Deliver a just-stored envelope now, without a trip through the store.

        Its outbox entries were stored already leased (due LEASE_MS later), so the store hands
        them out again only if this node stops before they are acked.
        """
        if self._group is None:
            self.wake()
            return
        due = self._clock.now_ms() + LEASE_MS
        for destination in destinations:
            self._queue(
                self._group,
                OutboxEntry(
                    destination=destination,
                    message_id=envelope.message_id,
                    next_attempt_ms=due,
                    attempts=1,
                    last_error=None,
                    wire=envelope.wire,
                ),
            )

    def _queue(self, group: asyncio.TaskGroup, entry: OutboxEntry) -> None:
        queued = self._queued.get(entry.destination)
        if queued is None:
            self._queued[entry.destination] = [entry]
            group.create_task(self._serve(entry.destination))
        else:
            queued.append(entry)  # its task takes it after the batch in flight

    async def _write_settled(self) -> None:
        """Drop acked entries from the stored outbox, coalesced every SETTLE_EVERY_MS.

        The signed ack is what counts; the outbox row is bookkeeping. A row that outlives a
        crash is sent once more and answered DUPLICATE, so one commit (and fsync) per interval
        serves every ack of the interval instead of one per batch on the hot path.
        """
        try:
            while True:
                await asyncio.sleep(SETTLE_EVERY_MS / 1000)
                await self._flush_settled()
        finally:
            with contextlib.suppress(HearthError):
                await self._flush_settled()  # a clean stop leaves no stale rows

    async def _flush_settled(self) -> None:
        settled, self._settled = self._settled, {}
        if settled:
            await self._store.run(_ack_all, self._store.store, settled)

    async def run(self) -> None:
        """Serve the outbox until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._write_settled())
            store = self._store
            self._outages.restored(await store.read(store.store.parked_destinations))
            while True:
                self._wake.clear()
                await self._start_probes()
                if sum(map(len, self._queued.values())) >= MAX_QUEUED_ENTRIES:
                    # Enough in hand: taking more would lease entries we cannot send before
                    # their lease runs out, and they would be handed out (and sent) twice.
                    self._hand_full = True
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._wake.wait()
                    continue
                entries = await self._store.run(
                    self._store.store.take_due,
                    now_ms=self._clock.now_ms(),
                    limit=BATCH_ENTRIES * 4,
                    lease_ms=LEASE_MS,
                )
                for entry in entries:
                    self._queue(group, entry)
                if len(entries) < BATCH_ENTRIES * 4:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._wake.wait()

    async def _start_probes(self) -> None:
        """Put one batch of each down destination whose time has come back in the queue."""
        for destination in self._outages.due_probes():
            back = await self._store.run(
                self._store.store.unpark,
                destination,
                now_ms=self._clock.now_ms(),
                limit=BATCH_ENTRIES,
            )
            if not back:
                self._outages.forget(destination)  # nothing waits for it any more

    async def _serve(self, destination: bytes) -> None:
        """Deliver everything queued for one destination, one batch at a time."""
        queued = self._queued[destination]
        try:
            while queued:
                sibling = destination_peer(destination)
                recipient = self._keyring.user_id if sibling else UserId(destination)
                certs, items, carried, left = build_batch(
                    queued[:BATCH_ENTRIES], recipient, self._certificate
                )
                del queued[:BATCH_ENTRIES]
                if not carried:
                    await self._retry(destination, left, "no certificate for the sender device")
                    continue
                queued[:0] = left  # over the byte budget: first in the next batch
                if self._outages.parking(destination):
                    await self._park_while_down(destination, recipient, certs, items, carried)
                elif sibling is None:
                    await self._deliver(recipient, certs, items, carried)
                else:
                    await self._deliver_to_node(destination, sibling, certs, items, carried)
                if self._hand_full:  # room in hand again: the loop may take more
                    self._hand_full = False
                    self._wake.set()
        finally:
            del self._queued[destination]

    def _certificate(self, device: DeviceId) -> bytes | None:
        if device == self._keyring.device_id:
            return self._keyring.certificate_bytes
        return self._directory.certificate(device)

    async def _deliver(
        self,
        recipient: UserId,
        certs: list[bytes],
        items: list[BatchItem],
        entries: list[OutboxEntry],
    ) -> None:
        homes = self._directory.homes(recipient)
        if not homes and await self._find_home(recipient):
            homes = self._directory.homes(recipient)
        if not homes:
            await self._unreachable(recipient, entries, "no home record for the recipient")
            return
        errors: list[str] = []
        for home in homes:
            try:
                # The outbox has its own backoff (§11.5): libp2p's minute of "failed lately"
                # must not hold a home back from a probe once it is reachable again.
                await self._links.reach(home, self._directory.addresses(recipient), retry_now=True)
                ack = await self._links.deliver(home, certs, items)
            except (DeliveryFailed, P2PError) as exc:
                errors.append(str(exc))
                continue
            await self._settle(recipient, recipient, home, ack, entries)
            return
        relayed = await self._relay(recipient, homes, certs, items)
        await self._unreachable(recipient, entries, "; ".join([*errors, relayed])[:200])

    async def _deliver_to_node(
        self,
        destination: bytes,
        peer_id: str,
        certs: list[bytes],
        items: list[BatchItem],
        entries: list[OutboxEntry],
    ) -> None:
        """One of our own user's other homes: only that node will do (no relay)."""
        try:
            addresses = self._directory.addresses(self._keyring.user_id)
            await self._links.reach(peer_id, addresses, retry_now=True)
            ack = await self._links.deliver(peer_id, certs, items)
        except (DeliveryFailed, P2PError) as exc:
            await self._unreachable(destination, entries, str(exc)[:200])
            return
        await self._settle(destination, self._keyring.user_id, peer_id, ack, entries)

    async def _relay(
        self, recipient: UserId, homes: tuple[str, ...], certs: list[bytes], items: list[BatchItem]
    ) -> str:
        for relay in await self._relays.choose(homes):  # on trust, not id order (SPEC §11.7)
            try:
                ack = await self._links.deliver(relay, certs, items)
            except DeliveryFailed:
                continue
            held = sum(r.status in (AckStatus.RELAYED, AckStatus.STORED) for r in ack.results)
            log.info(
                "home of %s unreachable: %d relayed via %s", recipient.hex()[:12], held, relay[-8:]
            )
            return f"relayed via {relay[-8:]}"
        return "home unreachable, no relay"

    async def _settle(
        self,
        destination: bytes,
        recipient: UserId,
        home: str,
        ack: Ack,
        entries: list[OutboxEntry],
    ) -> None:
        done: list[MessageId] = []
        again: list[OutboxEntry] = []
        for entry, result in zip(entries, ack.results, strict=True):
            if result.message_id != entry.message_id and result.status is not AckStatus.REJECTED:
                again.append(entry)  # the home answered for another envelope: keep ours
            elif result.status in (AckStatus.STORED, AckStatus.DUPLICATE):
                done.append(entry.message_id)
            elif result.status is AckStatus.REJECTED:
                log.warning(
                    "home %s rejected %s with code %d; dropped from the outbox",
                    home[-8:],
                    entry.message_id.hex()[:12],
                    result.code,
                )
                done.append(entry.message_id)
            else:
                again.append(entry)
        if self._outages.reached(destination):
            log.info("%s reachable again: delivering what was parked", _name(destination))
            if self._group is not None:
                self._group.create_task(self._unpark_all(destination))
        for message_id in done:  # the signed ack is the fact; our outbox row is bookkeeping
            self._emit(DeliveredToHome(message_id=message_id, recipient=recipient, peer_id=home))
        self._settled.setdefault(destination, []).extend(done)  # written by _write_settled
        self.delivered += len(done)
        if again:
            await self._retry(destination, again, f"deferred by {home[-8:]}")

    async def _unreachable(
        self, destination: bytes, entries: list[OutboxEntry], error: str
    ) -> None:
        """No home took the batch: the destination is down and its entries wait parked."""
        if self._outages.failed(destination):
            log.info("%s unreachable (%s): parking its deliveries", _name(destination), error)
        await self._park(destination, entries)

    async def _park_while_down(
        self,
        destination: bytes,
        recipient: UserId,
        certs: list[bytes],
        items: list[BatchItem],
        entries: list[OutboxEntry],
    ) -> None:
        """A batch for a destination that is down: relayed (a user's), then parked."""
        if destination_peer(destination) is None:
            await self._relay(recipient, self._directory.homes(recipient), certs, items)
        await self._park(destination, entries)

    async def _unpark_all(self, destination: bytes) -> None:
        """Everything parked for a destination that is back: due now, in order, in one go."""
        store = self._store
        now_ms = self._clock.now_ms()
        if await store.run_long(store.store.unpark, destination, now_ms=now_ms, limit=_ALL):
            self.wake()

    async def _park(self, destination: bytes, entries: list[OutboxEntry]) -> None:
        ids = [entry.message_id for entry in entries]
        await self._store.run(self._store.store.park_many, destination, ids)

    async def _retry(self, destination: bytes, entries: list[OutboxEntry], error: str) -> None:
        now = self._clock.now_ms()
        plan = [(e.message_id, next_attempt_ms(e.attempts, now, self._rng)) for e in entries]
        await self._store.run(self._store.store.reschedule_many, destination, plan, error=error)


def _name(destination: bytes) -> str:
    sibling = destination_peer(destination)
    return f"our home {sibling[-8:]}" if sibling else f"home of {destination.hex()[:12]}"


def _ack_all(store: Store, settled: dict[bytes, list[MessageId]]) -> None:
    for destination, message_ids in settled.items():
        store.ack_many(destination, message_ids)
