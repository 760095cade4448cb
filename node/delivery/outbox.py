"""The outbox pump: the guaranteed path of ARCHITECTURE §3 step 4, driven by `protocol.outbox`.

It reads due rows from the store (leased, so a crash hands them out again) and takes the ones
handed over as they were stored, feeds them to the `OutboxMachine`, and does what it says:
builds each batch (`peer_link.build_batch`), sends it to the destination's homes (dialling;
a recipient no record names is looked up aside while its batch parks), hands what no home took
to `RelayHops` (one hop per relay for many destinations, SPEC §11.7.2), writes reschedules,
parks, unparks and settles to the store, and emits `DeliveredToHome`. Every decision
(batches, the in-flight window, what each ack means, backoff, park / probe / relay) is the
machine's (SPEC §11.4, §11.5).

Owns: the wake-up event, the task per destination with a batch out and the delivered count;
the rows in hand and the outages are the machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.peer_link import (
    DeliveryFailed,
    PeerLinks,
    SlowHome,
    addresses_of,
    build_batch,
)
from hearthmesh.node.delivery.relay_choice import RelayChooser
from hearthmesh.node.delivery.relay_hops import HandOff, RelayHops
from hearthmesh.node.events import DeliveredToHome, NodeEvent
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.home_lookup import HomeLookups
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.p2p.errors import P2PError, StreamRefused
from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.destinations import destination_peer
from hearthmesh.protocol.envelope import Envelope, MessageId
from hearthmesh.protocol.errors import HearthError, LocalProtocolError
from hearthmesh.protocol.identity import DeviceId, Rng, UserId
from hearthmesh.protocol.outages import PROBE_MAX_MS
from hearthmesh.protocol.outbox import (
    LEASE_MS,
    Delivered,
    OutboxCommand,
    OutboxMachine,
    Park,
    Probe,
    Rejected,
    RelayBatch,
    Reschedule,
    SendBatch,
    ServeDestination,
    Settle,
    TakeMore,
    UnparkAll,
    WentDown,
)
from hearthmesh.storage.api import OutboxEntry, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["LEASE_MS", "OUTAGES_KEPT", "EndedOutage", "OutboxWorker", "failure_text"]

log = logging.getLogger(__name__)

_ALL: Final = 1 << 40
"""`unpark` limit meaning every entry."""

IDLE_POLL_MAX_MS: Final = 30_000
"""Longest wait between two looks at the stored outbox when nothing is known to come due.
The pump sleeps until the store's next due entry (`Store.next_due_ms`) or the machine's timer
(a lease, a settle, a probe), and every writer of entries due sooner wakes it (`wake`: our
sends and membership changes, `AfterStore` for the rows an arrival queued for our siblings,
sync, the history handoff, its own unparks); this look is only a backstop for a writer that
forgot to, so it backs off from `poll_ms`, doubling while looks find nothing: an idle node
looked 5 times a second (20 with the tests' 50 ms), each a write batch, and then every 2 s."""

_NEVER_MS: Final = 1 << 62

HOME_FAILURE_TEXT_MAX: Final = 600
"""Characters kept of one home's failure in a batch's reason: room for an error with its
causes (`describe_error`, up to six), so the log says why, not only that, a home was not reached."""

OUTAGES_KEPT: Final = 256
"""Ended outages of recipients the pump remembers (`outages_ended`), newest last."""

FAILURE_TEXT_MAX: Final = 2_000
"""Characters kept of a batch's whole reason (each home's failure, then the relay's hand-off):
a record names at most 8 homes, and a log line stays bounded whatever a peer's errors say."""


def failure_text(errors: Iterable[str]) -> str:
    """Why no home took a batch, for the log: each home's failure with its causes, bounded.
    One cut of the joined text at 200 characters kept the first home's outer error and lost
    the cause chain that says what went wrong (a reset, a negotiation timeout, a refusal)."""
    text = "; ".join(error[:HOME_FAILURE_TEXT_MAX] for error in errors)
    return text[:FAILURE_TEXT_MAX]


@dataclass(frozen=True, slots=True)
class EndedOutage:
    """A recipient that was down and acked again: what its deliveries waited for (status,
    `simulate --scale`'s slow messages)."""

    user: UserId
    since_ms: int
    """When it went down (0: before a restart)."""
    ended_ms: int
    absent: bool
    """No record named a home of it for some of the outage: its envelopes waited as markers."""


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
        lookups: HomeLookups,
        probe_max_ms: int = PROBE_MAX_MS,
    ) -> None:
        self._store = store
        self._links = links
        self._directory = directory
        self._keyring = keyring
        self._clock = clock
        self._rng = rng
        self._emit = emit
        self._lookups = lookups
        self._poll_ms = poll_ms
        self._probe_max_ms = probe_max_ms
        self._nudge = asyncio.Event()
        """Set to end the loop's sleep: rows to take, or a timer earlier than it sleeps until."""
        self._take_asked = False
        self._sleeping_until_ms: int | None = None
        self._due_ms = _NEVER_MS
        """When the earliest entry in the store comes due, as far as this pump knows: read
        with each take, lowered by each reschedule it performs."""
        self._machine: OutboxMachine[OutboxEntry] = self._new_machine()
        self._group: asyncio.TaskGroup | None = None
        self._hops = RelayHops(deliver=links.deliver, choose=relays.choose, spawn=self._spawn)
        self._marked: set[bytes] = set()
        """Destinations that may hold markers (SPEC §11.5.2): their next unpark may turn a long
        history into entries, so it runs as a long write (`AsyncStore.run_long`)."""
        self.delivered = 0
        """Entries acked by a home node (for status and benchmarks)."""
        self.outages_ended: deque[EndedOutage] = deque(maxlen=OUTAGES_KEPT)
        """The latest recipients' outages that ended, oldest first."""

    def _new_machine(self) -> OutboxMachine[OutboxEntry]:
        return OutboxMachine(rng=self._rng, probe_max_ms=self._probe_max_ms)

    def wake(self) -> None:
        """New entries are due: look now rather than at the next poll."""
        self._take_asked = True
        self._nudge.set()

    def _rearm(self) -> None:
        """The machine was fed: if its timer is now earlier than the loop sleeps, wake it."""
        timer_ms = self._machine.timer_ms()
        sleeping_until = self._sleeping_until_ms
        if timer_ms is not None and sleeping_until is not None and timer_ms < sleeping_until:
            self._nudge.set()

    @property
    def deferred_due_again(self) -> int:
        """Rows its homes deferred made due again once they stored a later batch (SPEC
        §11.5.1), since the outbox's run last started."""
        return self._machine.deferred_due_again

    @property
    def unreachable(self) -> list[bytes]:
        """Destinations down now (SPEC §11.5.2): their deliveries wait parked."""
        return self._machine.down()

    def revive(self, peer_id: str, *, cause: str = "connected") -> None:
        """`peer_id` connected (or a record naming it was learnt, `cause`): a destination down
        that it is a home of is probed at once."""

        def homed_at(destination: bytes) -> bool:
            own_home = destination_peer(destination)
            if own_home is not None:
                return own_home == peer_id
            return peer_id in self._directory.homes(UserId(destination))

        machine = self._machine
        revived = [d for d in machine.down() if homed_at(d)]
        for destination in revived:
            if machine.absent(destination):  # its deliveries waited as markers until now
                log.info("%s known at %s (%s): probing", _name(destination), peer_id[-8:], cause)
        if machine.home_connected(revived):
            self.wake()

    def lease_due_ms(self) -> int:
        """When rows stored now for `submit` come due again if never settled (the machine's
        lease): the sender stores them leased, so the store does not hand them out twice."""
        return self._machine.lease_due_ms(self._clock.now_ms())

    def absent(self, destination: bytes) -> bool:
        """True if envelopes for `destination` leave a marker, not an entry (SPEC §11.5.2)."""
        return self._machine.absent(destination)

    def split(self, destinations: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """(entries, markers): which destinations of an envelope about to be stored get an
        outbox entry, and which are absent (`OutboxMachine.absent`) and get a marker of what
        they are owed instead (SPEC §11.5.2, `AppendRequest.absent_to`). A user no record
        names is absent from its first envelope (`OutboxMachine.known_nowhere`)."""
        machine = self._machine
        now_ms = self._now()
        newly_down = False
        for destination in destinations:
            if (
                destination_peer(destination) is None
                and not machine.absent(destination)  # a group's absent members: asked already
                and not self._directory.homes(UserId(destination))
            ):
                newly_down |= machine.known_nowhere(destination, now_ms)
        if newly_down:
            self._rearm()  # its probe (the lookup) may be due before the loop wakes
        absent = tuple(d for d in destinations if machine.absent(d))
        if not absent:
            return destinations, ()
        marked = set(absent)
        return tuple(d for d in destinations if d not in marked), absent

    def submit(
        self, envelope: Envelope, destinations: tuple[bytes, ...], absent: tuple[bytes, ...] = ()
    ) -> None:
        """Deliver a just-stored envelope now, without a trip through the store.

        Its outbox rows were stored already leased (`lease_due_ms`), so the store hands
        them out again only if they are not settled by then (this node stopped); the machine
        holds each row once either way. `absent` got markers instead (`split`): one whose
        home came to be known while the envelope was being stored has its markers turned
        into entries by its next probe, or now if it is no longer down.
        """
        self._marked.update(absent)
        group, machine = self._group, self._machine
        back = [d for d in absent if not machine.absent(d)]
        if back and group is not None:
            down = set(machine.down())
            for destination in back:  # up already: no probe will turn its markers into entries
                if destination not in down:
                    group.create_task(self._unpark_all(destination))
        if self._group is None:
            self.wake()
            return
        due = self.lease_due_ms()
        entries = [
            OutboxEntry(
                destination=destination,
                message_id=envelope.message_id,
                next_attempt_ms=due,
                attempts=1,
                last_error=None,
                wire=envelope.wire,
            )
            for destination in destinations
        ]
        self._serve_all(self._machine.entries_ready(entries))

    async def run(self) -> None:
        """Serve the outbox until cancelled."""
        self._machine = self._new_machine()  # a restart (supervisor) starts with an empty hand
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                store = self._store
                restored = await store.read(store.store.parked_destinations)
                self._marked.update(restored)  # some of them may hold markers
                self._machine.restored(restored)
                take_now, next_poll_ms, empty_looks = True, 0, 0
                while True:
                    self._nudge.clear()
                    await self._perform(self._machine.handle_timer(self._clock.now_ms()))
                    now_ms = self._clock.now_ms()
                    if take_now or self._take_asked or now_ms >= min(next_poll_ms, self._due_ms):
                        asked, self._take_asked = self._take_asked, False
                        take_now, took = await self._take(now_ms)
                        empty_looks = 0 if took or asked else min(empty_looks + 1, 16)
                        backstop_ms = max(self._poll_ms, IDLE_POLL_MAX_MS)
                        next_poll_ms = now_ms + min(self._poll_ms << empty_looks, backstop_ms)
                    if not take_now and not self._take_asked:
                        await self._sleep(min(next_poll_ms, self._due_ms))
        finally:
            self._group = None
            with contextlib.suppress(HearthError):
                # a clean stop leaves no stale rows, and none leased: a restart takes them at once
                await self._perform(self._machine.stop(self._now()))

    async def _take(self, now_ms: int) -> tuple[bool, bool]:
        """Take due rows into the machine and learn when the next one comes due; returns (a
        full load was taken: take again at once, any row was taken)."""
        wanted = self._machine.entries_wanted()
        if not wanted:
            return False, False  # the hand is full: a batch that leaves it wakes us (TakeMore)
        store = self._store
        machine = self._machine
        due_by_ms = machine.due_by_ms(now_ms)
        lease_ms = machine.lease_due_ms(now_ms) - due_by_ms  # leased from now, however far due
        self._due_ms = _NEVER_MS  # a reschedule performed meanwhile lowers it again
        entries, next_due_ms = await store.run(
            _take_due, store.store, now_ms=due_by_ms, limit=wanted, lease_ms=max(0, lease_ms)
        )
        if next_due_ms is not None:
            self._due_ms = min(self._due_ms, next_due_ms)
        machine.taken(len(entries), wanted)
        self._serve_all(machine.entries_ready(entries))
        return len(entries) == wanted, bool(entries)

    def _due_at(self, due_ms: int) -> None:
        """Rows were put back in the store due at `due_ms`: wake for them then, not later."""
        if due_ms < self._due_ms:
            self._due_ms = due_ms
            sleeping_until = self._sleeping_until_ms
            if sleeping_until is not None and due_ms < sleeping_until:
                self._nudge.set()

    async def _sleep(self, next_poll_ms: int) -> None:
        """Until the next poll, the machine's timer or a nudge, whichever comes first."""
        deadline_ms = next_poll_ms
        timer_ms = self._machine.timer_ms()
        if timer_ms is not None:
            deadline_ms = min(deadline_ms, timer_ms)
        self._sleeping_until_ms = deadline_ms
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0, deadline_ms - self._now()) / 1000):
                    await self._nudge.wait()
        finally:
            self._sleeping_until_ms = None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the outbox's task group (it ends with `run`): batches are served only
        while it runs, so a hop or lookup asked for outside it is a caller bug."""
        if self._group is None:
            work.close()
            raise LocalProtocolError("outbox work spawned outside the outbox's run")
        self._group.create_task(work)

    @property
    def relay_hops(self) -> RelayHops:
        """Hand-offs to relays (their counts: status and tests)."""
        return self._hops

    def _serve_all(self, commands: Iterable[OutboxCommand]) -> None:
        """A task for each destination the machine says to serve (only while `run` runs)."""
        group = self._group
        for command in commands:
            if group is None or not isinstance(command, ServeDestination):
                raise LocalProtocolError(f"{type(command).__name__} outside the outbox's run")
            group.create_task(self._serve(command.destination))

    async def _serve(self, destination: bytes) -> None:
        """Deliver the destination's batches, one at a time, as the machine hands them out."""
        machine = self._machine
        recipient = self._recipient(destination)
        while (batch := machine.next_batch(destination)) is not None:
            certs, items, carried, left = build_batch(batch, recipient, self._certificate)
            commands = deque(machine.batch_built(destination, carried, left, self._now()))
            while commands:
                command = commands.popleft()
                if isinstance(command, SendBatch):
                    commands.extend(await self._send(command, recipient, certs, items))
                    self._rearm()  # an ack arms the settle timer, a failure the probe's
                elif isinstance(command, RelayBatch):
                    homes = self._directory.homes(recipient)
                    self._hops.hand_off(HandOff(recipient, homes, certs, items))
                else:
                    await self._perform((command,))

    async def _perform(self, commands: Iterable[OutboxCommand]) -> None:
        """Do what the machine said, in order (SendBatch and RelayBatch belong to `_serve`)."""
        store = self._store
        for command in commands:
            match command:
                case Delivered():
                    self._delivered(command)
                case Reschedule(destination=destination, plan=plan, error=error):
                    await store.run(store.store.reschedule_many, destination, plan, error=error)
                    self._due_at(min(due for _, due in plan))
                    wait_ms = max(due for _, due in plan) - self._now()
                    if wait_ms > self._probe_max_ms:  # longer than an outage would wait
                        log.info(
                            "%d deliveries to %s wait %.1f s (%s)",
                            len(plan),
                            _name(destination),
                            wait_ms / 1000,
                            error,
                        )
                    elif wait_ms <= 0:  # what its home deferred, due again (DeferredRows)
                        log.info(
                            "%d deliveries to %s due now (%s)", len(plan), _name(destination), error
                        )
                case Park(destination=destination, message_ids=ids):
                    await store.run(store.store.park_many, destination, ids)
                case Probe(destination=destination, limit=limit):
                    if destination_peer(destination) or self._directory.homes(UserId(destination)):
                        await self._probe(destination, limit)
                    elif self._group is not None:  # a lookup may take seconds: not inline
                        self._group.create_task(self._probe_unknown(destination, limit))
                case UnparkAll(destination=destination, down_since_ms=since, was_absent=absent):
                    now_ms = self._now()
                    log.info(
                        "%s reachable again after %.1f s%s: delivering what was parked",
                        _name(destination),
                        (now_ms - since) / 1000 if since else 0.0,
                        " (no record named a home of it)" if absent else "",
                    )
                    if destination_peer(destination) is None:
                        ended = EndedOutage(UserId(destination), since, now_ms, absent)
                        self.outages_ended.append(ended)
                    if self._group is not None:
                        self._group.create_task(self._unpark_all(destination))
                case Settle(acked=acked):
                    if self._group is None:  # stopping: now
                        await store.run(_ack_all, store.store, acked)
                    else:
                        # Aside, in the next commit that a send or an arrival starts (lazy): a
                        # commit of its own made the next send wait behind its sync, and a
                        # settle lost in a crash only delivers its rows again (SPEC §11.4).
                        self._group.create_task(store.run_lazy(_ack_all, store.store, acked))
                case Rejected(home=home, message_id=message_id, code=code):
                    log.warning(
                        "home %s rejected %s with code %d; dropped from the outbox",
                        home[-8:],
                        message_id.hex()[:12],
                        code,
                    )
                case WentDown(destination=destination, error=error):
                    log.info(
                        "%s unreachable (%s): parking its deliveries", _name(destination), error
                    )
                case TakeMore():
                    self.wake()
                case ServeDestination() | SendBatch() | RelayBatch():
                    raise LocalProtocolError(f"{type(command).__name__} outside a batch")

    def _delivered(self, command: Delivered) -> None:
        recipient = self._recipient(command.destination)
        for message_id in command.message_ids:  # the signed ack is the fact; the row follows
            self._emit(
                DeliveredToHome(message_id=message_id, recipient=recipient, peer_id=command.home)
            )
        self.delivered += len(command.message_ids)

    async def _send(
        self, command: SendBatch, recipient: UserId, certs: list[bytes], items: list[BatchItem]
    ) -> list[OutboxCommand]:
        """The batch to the first home that takes it (then a relay, if the machine says so);
        the machine's reading of the outcome."""
        destination = command.destination
        own_home = destination_peer(destination)
        if own_home is not None:
            homes: tuple[str, ...] = (own_home,)  # one of our own homes: only that node will do
        else:
            homes = self._directory.homes(recipient)
            if not homes:
                # Looked up aside: a record found revives the destination (`revive`, a probe at
                # once). Awaited here, the walk held the batch's rows in hand meanwhile, and a
                # group's absent members filled the hand while theirs queued for a walk.
                self._spawn(self._look_up(recipient))
                if command.relay_fallback:  # a relay may know it, or learn it first
                    self._hops.hand_off(HandOff(recipient, homes, certs, items))
                return self._machine.send_failed(
                    destination, "no home record for the recipient", self._now(), homeless=True
                )
        errors: list[str] = []
        refused = True  # every home tried was connected and refused the stream (SPEC §11.5.2)
        slow = False  # a home read it and answered pings, but no ack came: smaller batches
        addresses = self._directory.addresses(recipient)
        for home in homes:
            try:
                # The outbox has its own backoff (§11.5): libp2p's minute of "failed lately"
                # must not hold a home back from a probe once it is reachable again.
                reached = await self._links.reach(home, addresses, retry_now=True)
                if not reached and addresses_of(home, addresses):
                    # Opening a stream would dial the same addresses again, a second dial
                    # bound; the next try takes whatever newer record came meanwhile.
                    errors.append(f"{home[-8:]}: no address of its record answered")
                    refused = False
                    continue
                ack = await self._links.deliver(home, certs, items)
            except (DeliveryFailed, P2PError) as exc:
                errors.append(str(exc))
                refused = refused and isinstance(exc.__cause__ or exc, StreamRefused)
                slow = slow or isinstance(exc, SlowHome)
                continue
            return self._machine.ack_received(destination, home, ack.results, self._now())
        if command.relay_fallback:
            self._hops.hand_off(HandOff(recipient, homes, certs, items))
            errors.append("handed to a relay")
        text = failure_text(errors)
        now = self._now()
        return self._machine.send_failed(destination, text, now, refused=refused, slow=slow)

    async def _probe(self, destination: bytes, limit: int) -> None:
        """Put a few parked rows back, due now: the next batch tries the homes (SPEC §11.5.2)."""
        store = self._store
        now_ms = self._now()
        if destination in self._marked:  # markers become entries first: maybe many
            self._marked.discard(destination)
            back = await store.run_long(store.store.unpark, destination, now_ms=now_ms, limit=limit)
        else:
            back = await store.run(store.store.unpark, destination, now_ms=now_ms, limit=limit)
        self._machine.unparked(destination, back)
        if back:
            self.wake()

    async def _probe_unknown(self, destination: bytes, limit: int) -> None:
        """A probe of a user whose home no record names: rows move only once a lookup (backed
        off per user, `HomeLookups`) finds one; until then the probe costs no store write, and
        the next waits for the user's next lookup (a record learnt otherwise probes at once)."""
        user = UserId(destination)
        if await self._lookups.find_routine(user):
            await self._probe(destination, limit)
        else:
            asked_ms = self._lookups.next_ask_ms(user)
            self._machine.probe_missed(destination, self._now(), not_before_ms=asked_ms)
            self._rearm()

    async def _look_up(self, recipient: UserId) -> None:
        await self._lookups.find_routine(recipient)  # HomeRecords adopts it, and revives

    async def _unpark_all(self, destination: bytes) -> None:
        """Everything parked for a destination that is back: due now, in order, in one go."""
        store = self._store
        now_ms = self._now()
        self._marked.discard(destination)  # its markers become entries first
        if await store.run_long(store.store.unpark, destination, now_ms=now_ms, limit=_ALL):
            self.wake()

    def _recipient(self, destination: bytes) -> UserId:
        """The user a destination's batches are for: our own for our other homes."""
        return self._keyring.user_id if destination_peer(destination) else UserId(destination)

    def _certificate(self, device: DeviceId) -> bytes | None:
        if device == self._keyring.device_id:
            return self._keyring.certificate_bytes
        return self._directory.certificate(device)

    def _now(self) -> int:
        return self._clock.now_ms()


def _name(destination: bytes) -> str:
    own_home = destination_peer(destination)
    return f"our home {own_home[-8:]}" if own_home else f"home of {destination.hex()[:12]}"


def _take_due(
    store: Store, *, now_ms: int, limit: int, lease_ms: int
) -> tuple[list[OutboxEntry], int | None]:
    """One write batch: the due rows, and when the first row left comes due."""
    return store.take_due(now_ms=now_ms, limit=limit, lease_ms=lease_ms), store.next_due_ms()


def _ack_all(store: Store, acked: Mapping[bytes, tuple[MessageId, ...]]) -> None:
    for destination, message_ids in acked.items():
        store.ack_many(destination, message_ids)
