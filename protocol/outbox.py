"""The outbox machine: what to send, to whom, and what each answer means (SPEC §11.4, §11.5).

Sans-I/O in the style of aioquic's `QuicConnection`: the node's pump reads due rows from the
store, feeds them in (`entries_ready`), builds and sends the batches the machine hands out
(`next_batch`, `batch_built`), reports each outcome (`ack_received`, `send_failed`), tells it
of connections (`home_connected`) and of time (`handle_timer` at `timer_ms()`), and performs the
commands that come back (store writes, sends, relays, events). Time (`now_ms`) and randomness
(`rng`) come in as arguments.

Owns: every outbox row in hand (taken from the store or handed over at send, until it is
settled, rescheduled or parked), the batch in flight per destination, the batch size of each
destination whose batch failed lately, the acked rows not yet removed from the store, and
the outages (`Outages`). A row is held once whichever way it came
in: one taken again from the store after its lease ran out while it was still in hand (a slow
destination) is the same row, not a second delivery.

The rules: one batch per destination in flight (SPEC §11.4.2, oldest first); STORED, DUPLICATE
and REJECTED end a delivery, RELAYED and DEFERRED keep it (SPEC §11.4.1); a failed row comes due
again after the §11.5.1 backoff; a destination no home answered is down and its rows wait
parked, a user's batches for it are relayed first, a probe of a few rows tries it again, and
its batches are halved until full ones are acked again (SPEC §11.5.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeAlias, TypeVar

from .backoff import next_attempt_ms
from .deferred_rows import DeferredRows
from .delivery import AckStatus, DeliveryResult
from .destinations import destination_peer
from .envelope import MessageId
from .errors import LocalProtocolError
from .identity import Rng
from .outages import PROBE_MAX_MS, Outages

__all__ = [
    "BATCH_ENTRIES",
    "LEASE_MS",
    "MAX_HELD_ENTRIES",
    "PROBE_ENTRIES",
    "SETTLE_EVERY_MS",
    "TAKE_ENTRIES",
    "Delivered",
    "OutboxCommand",
    "OutboxMachine",
    "Park",
    "PendingEntry",
    "Probe",
    "Rejected",
    "RelayBatch",
    "Reschedule",
    "SendBatch",
    "ServeDestination",
    "Settle",
    "TakeMore",
    "UnparkAll",
    "WentDown",
]

BATCH_ENTRIES: Final = 256
"""Rows in one batch at most (the pump's byte budget may carry fewer)."""
PROBE_ENTRIES: Final = 8
"""Rows a probe of a down destination puts back and tries (SPEC §11.5.2): enough to learn
whether a home answers; a full batch per probe made every probe round cost rows times
destinations (a group's absent members each hold the group's history)."""
TAKE_ENTRIES: Final = BATCH_ENTRIES * 4
"""Rows the pump takes from the store at a time."""
LEASE_MS: Final = 15_000
"""A row handed out but never settled (a crash) comes due again after this long."""
MAX_HELD_ENTRIES: Final = 4 * BATCH_ENTRIES * 4
"""Rows in hand, over all destinations, past which no more are taken from the store."""
SETTLE_EVERY_MS: Final = 50
"""How often acked rows leave the stored outbox (one transaction for all of them)."""
MAX_SIZED_DESTINATIONS: Final = 4096
"""Destinations whose batches are kept smaller after a failure (`next_batch`) at most; the
oldest is forgotten first (it goes back to full batches)."""


class PendingEntry(Protocol):
    """One outbox row as the machine sees it (`storage.api.OutboxEntry` is one)."""

    @property
    def destination(self) -> bytes: ...

    @property
    def message_id(self) -> MessageId: ...

    @property
    def attempts(self) -> int:
        """Times the row was handed out, this time included (the §11.5.1 n)."""
        ...


E = TypeVar("E", bound=PendingEntry)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeDestination:
    """Rows wait for a destination with no batch out: start taking its batches (`next_batch`)."""

    destination: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SendBatch:
    """Send the batch just built to the destination's homes; report `ack_received` or
    `send_failed`."""

    destination: bytes
    relay_fallback: bool
    """No home took it: hand it to a relay before reporting the failure (a user's homes, never
    our own other homes: only that node will do)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayBatch:
    """The destination is down: hand the batch just built to a relay (best effort, no report)."""

    destination: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Park:
    """Take these rows out of the due queue until the destination is tried again (§11.5.2)."""

    destination: bytes
    message_ids: tuple[MessageId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reschedule:
    """Move these rows to their next attempt (message id, due at), noting `error`."""

    destination: bytes
    plan: tuple[tuple[MessageId, int], ...]
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """Put up to `limit` parked rows back, due now, and report `unparked` (§11.5.2)."""

    destination: bytes
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnparkAll:
    """The destination is back: every parked row of it is due now, in order."""

    destination: bytes
    down_since_ms: int = field(default=0, compare=False)
    """When it went down (0: before a restart; for the log and `simulate --scale`)."""
    was_absent: bool = field(default=False, compare=False)
    """No record named a home of it in this outage: its envelopes waited as markers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle:
    """Remove these acked rows (by destination) from the stored outbox, in one transaction."""

    acked: Mapping[bytes, tuple[MessageId, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """A home of the destination acked these rows: delivered (SPEC §11.4)."""

    destination: bytes
    home: str
    message_ids: tuple[MessageId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A home refused a row for good (it leaves the outbox)."""

    destination: bytes
    home: str
    message_id: MessageId
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WentDown:
    """No home took a batch of a destination that was up until now."""

    destination: bytes
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeMore:
    """The hand was full and a batch left it: take more rows from the store now."""


OutboxCommand: TypeAlias = (
    ServeDestination
    | SendBatch
    | RelayBatch
    | Park
    | Reschedule
    | Probe
    | UnparkAll
    | Settle
    | Delivered
    | Rejected
    | WentDown
    | TakeMore
)


class OutboxMachine(Generic[E]):
    """The outbox's decisions, fed by a pump (see the module docstring)."""

    def __init__(self, *, rng: Rng, probe_max_ms: int = PROBE_MAX_MS) -> None:
        self._rng = rng
        self._outages = Outages(rng=rng, probe_max_ms=probe_max_ms)
        self._queued: dict[bytes, list[E]] = {}
        """Rows in hand per destination with a batch out (its key exists while one is)."""
        self._in_flight: dict[bytes, list[E]] = {}
        """The batch out for each destination (one at a time)."""
        self._held: set[tuple[bytes, MessageId]] = set()
        """(destination, message id) of every row queued or in flight."""
        self._acked: dict[bytes, dict[MessageId, None]] = {}
        """Acked rows by destination (in ack order), not yet settled in the store."""
        self._settle_at_ms: int | None = None
        self._hand_full = False
        self._sizes: dict[bytes, int] = {}
        """Batch size of each destination whose batch failed lately (others: BATCH_ENTRIES)."""
        self._deferred = DeferredRows()
        """Rows a home deferred: due again once a home of theirs stores a batch of ours."""
        self.deferred_due_again = 0
        """Rows `DeferredRows` made due again (status, and the scale run's report, SPEC §20.6)."""
        self._starting = True
        """Until a take comes back short: rows leased by the machine before this one count as
        due (`due_by_ms`)."""

    # --- what the pump asks -----------------------------------------------------------------

    def down(self) -> list[bytes]:
        """Destinations down now (SPEC §11.5.2), sorted: their rows wait parked."""
        return self._outages.down()

    def absent(self, destination: bytes) -> bool:
        """A user whose last batch found no home to try (no record names one; its lookup goes
        on aside): an envelope for it leaves a marker of what it is owed instead of an entry,
        and is not relayed (SPEC §11.5.2). False once a home of it is known
        (`home_connected`) or answers; the marker becomes its entries at the next probe."""
        return _is_user(destination) and self._outages.absent(destination)

    def known_nowhere(self, destination: bytes, now_ms: int) -> bool:
        """No record names a home of this user (the pump asks before an envelope for it is
        stored): it is absent from now on, so the envelope leaves a marker instead of an entry
        whose batch would fail, be parked and be relayed first (for a group's ~1,000 absent
        members, ~1,000 relay copies of each send before they counted as absent). Its probe
        looks it up, as after a batch that found no home (SPEC §11.5.2). A user down already,
        and our own homes, are left as they are. True if it is down from now on."""
        return _is_user(destination) and self._outages.known_nowhere(destination, now_ms)

    def lease_due_ms(self, now_ms: int) -> int:
        """When a row handed out at `now_ms` comes due again if it is never settled (the node
        died first): the store's lease on rows taken, and on rows stored for `entries_ready`
        straight from a send (they are stored already leased, so the store does not hand them
        out a second time while this machine holds them)."""
        return now_ms + LEASE_MS

    def entries_wanted(self) -> int:
        """How many rows to take from the store now: 0 while the hand is full (rows taken and
        not sent before their lease ran out would be handed out again)."""
        if len(self._held) >= MAX_HELD_ENTRIES:
            self._hand_full = True
            return 0
        return TAKE_ENTRIES

    def due_by_ms(self, now_ms: int) -> int:
        """Rows due by this time are to be taken from the store now (its `now_ms`; the lease
        still runs from `now_ms`, `lease_due_ms`).

        Right after a start, a row the machine before this one held (the node was killed, or
        its pump restarted) is held by no one, yet leased for up to `LEASE_MS`: waiting out
        that lease held a killed sender's messages back for seconds after it was up again. So
        the first takes count every row due within a lease as due, until one comes back short
        (`taken`); a row backing off that comes due that soon is tried at once too, as parked
        ones are (SPEC §11.5.2): a restart retries everything it owes."""
        return now_ms + LEASE_MS if self._starting else now_ms

    def taken(self, count: int, wanted: int) -> None:
        """The pump took `count` rows of the `wanted` (`entries_wanted`): a short take had every
        row due, so the start is over."""
        if count < wanted:
            self._starting = False

    def timer_ms(self) -> int | None:
        """The next time `handle_timer` has something to do; None if nothing is pending."""
        probe = self._outages.next_probe_ms()
        if self._settle_at_ms is None:
            return probe
        return self._settle_at_ms if probe is None else min(probe, self._settle_at_ms)

    # --- inputs -----------------------------------------------------------------------------

    def restored(self, destinations: Iterable[bytes]) -> None:
        """At start: these destinations have rows parked; each is probed at once."""
        self._outages.restored(destinations)

    def entries_ready(self, entries: Iterable[E]) -> list[OutboxCommand]:
        """Rows due (taken from the store, or handed over as they were stored). A row already
        in hand or acked is passed over: it is the same delivery."""
        started: list[OutboxCommand] = []
        for entry in entries:
            destination = entry.destination
            key = (destination, entry.message_id)
            if key in self._held or entry.message_id in self._acked.get(destination, {}):
                continue
            self._held.add(key)
            queued = self._queued.get(destination)
            if queued is None:
                self._queued[destination] = [entry]
                started.append(ServeDestination(destination=destination))
            else:
                queued.append(entry)  # it goes after the batch in flight
        return started

    def next_batch(self, destination: bytes) -> list[E] | None:
        """The destination's next batch, oldest first, now in flight; None when none is left
        (the destination is served again after its next `ServeDestination`)."""
        if destination in self._in_flight:
            raise LocalProtocolError("a batch is already in flight for this destination")
        queued = self._queued.get(destination)
        if not queued:
            self._queued.pop(destination, None)
            return None
        size = BATCH_ENTRIES if self._outages.parking(destination) else self._size(destination)
        batch = queued[:size]
        del queued[:size]
        self._in_flight[destination] = batch
        return batch

    def _size(self, destination: bytes) -> int:
        """How many rows the destination's next batch to its homes carries: halved after a
        batch a home was too slow to ack (`send_failed(slow=True)`), doubled after each batch
        of that size acked, back to BATCH_ENTRIES (SPEC §11.5.2). A home too slow to store a
        full batch within the ack bound (a loaded machine) failed that same full batch each
        time its outage ended, a probe's 8 rows per 10 s timeout; now it gets its backlog a
        smaller batch at a time. A lost path (a partition, a kill) says nothing of what a
        batch costs the home: halving there too left a partition's backlog to go in rounds
        of 8, 16, 32, ... after the heal, 5 round trips before its last message arrived.
        The batches of a destination that is parking (relayed and parked, not sent) stay
        full."""
        return self._sizes.get(destination, BATCH_ENTRIES)

    def batch_built(
        self, destination: bytes, carried: Sequence[E], left: Sequence[E], now_ms: int
    ) -> list[OutboxCommand]:
        """The pump built the batch: `carried` went in, `left` did not (no certificate for the
        sender device, or past the byte budget). What to do with it."""
        batch = self._batch_of(destination)
        if len(carried) + len(left) != len(batch):
            raise LocalProtocolError("batch_built must account for every row of the batch")
        del self._in_flight[destination]
        if not carried:
            self._release(destination, batch)
            plan = self._retry_plan(batch, now_ms)
            error = "no certificate for the sender device"
            return [Reschedule(destination=destination, plan=plan, error=error), *self._ended()]
        self._queued[destination][:0] = left  # past the budget: first in the next batch
        if not self._outages.parking(destination):
            self._in_flight[destination] = list(carried)
            return [SendBatch(destination=destination, relay_fallback=_is_user(destination))]
        self._release(destination, carried)
        relay: list[OutboxCommand] = [RelayBatch(destination=destination)]
        ids = tuple(e.message_id for e in carried)
        return [
            *(relay if _is_user(destination) else []),
            Park(destination=destination, message_ids=ids),
            *self._ended(),
        ]

    def ack_received(
        self, destination: bytes, home: str, results: Sequence[DeliveryResult], now_ms: int
    ) -> list[OutboxCommand]:
        """A home of the destination acked the batch in flight (one result per row, checked by
        the pump): what each status means (SPEC §11.4.1)."""
        batch = self._batch_of(destination)
        if len(results) != len(batch):
            raise LocalProtocolError("an ack answers every row of its batch")
        del self._in_flight[destination]
        self._release(destination, batch)
        self._grow(destination, len(batch))
        commands: list[OutboxCommand] = []
        done: list[MessageId] = []
        again: list[E] = []
        deferred: list[MessageId] = []
        stored = False
        for entry, result in zip(batch, results, strict=True):
            if result.message_id != entry.message_id and result.status is not AckStatus.REJECTED:
                again.append(entry)  # the home answered for another envelope: keep ours
            elif result.status in (AckStatus.STORED, AckStatus.DUPLICATE):
                done.append(entry.message_id)
                stored = True
            elif result.status is AckStatus.REJECTED:
                commands.append(
                    Rejected(
                        destination=destination,
                        home=home,
                        message_id=entry.message_id,
                        code=result.code,
                    )
                )
                done.append(entry.message_id)
            else:  # RELAYED, DEFERRED: not a delivery
                again.append(entry)
                if result.status is AckStatus.DEFERRED:
                    deferred.append(entry.message_id)
        if (ended := self._outages.reached(destination)) is not None:
            since_ms, absent = ended
            commands.append(
                UnparkAll(destination=destination, down_since_ms=since_ms, was_absent=absent)
            )
        if done:
            commands.append(Delivered(destination=destination, home=home, message_ids=tuple(done)))
            self._acked.setdefault(destination, {}).update(dict.fromkeys(done))
            if self._settle_at_ms is None:
                self._settle_at_ms = now_ms + SETTLE_EVERY_MS
        if done:
            self._deferred.forget(destination, done)
        if stored:
            commands.extend(self._deferred_due(destination, now_ms))
        if again:
            plan = self._retry_plan(again, now_ms)
            error = f"deferred by {home[-8:]}"
            commands.append(Reschedule(destination=destination, plan=plan, error=error))
        if deferred:
            self._deferred.note(destination, deferred, now_ms)
        return commands + self._ended()

    def _deferred_due(self, destination: bytes, now_ms: int) -> list[Reschedule]:
        """A home of the destination stored a batch of ours: rows it deferred before are due
        now (`DeferredRows`), but for those in hand."""
        plan = tuple(
            (message_id, now_ms)
            for message_id in self._deferred.due(destination, now_ms)
            if (destination, message_id) not in self._held
        )
        if not plan:
            return []
        self.deferred_due_again += len(plan)
        error = "due again: its home stores our envelopes now"
        return [Reschedule(destination=destination, plan=plan, error=error)]

    def send_failed(
        self,
        destination: bytes,
        error: str,
        now_ms: int,
        *,
        homeless: bool = False,
        refused: bool = False,
        slow: bool = False,
    ) -> list[OutboxCommand]:
        """No home took the batch in flight (`homeless`: no record names one to try;
        `refused`: each home tried was connected and refused the stream, so its probes back
        off to §11.5.1's cap; `slow`: a home read it on a connection that answered pings, and
        no ack came within the patience, so the next batches are smaller): the destination is
        down, the batch parked."""
        batch = self._batch_of(destination)
        del self._in_flight[destination]
        self._release(destination, batch)
        if slow:
            self._shrink(destination, len(batch))
        commands: list[OutboxCommand] = []
        if self._outages.failed(destination, now_ms, homeless=homeless, refused=refused):
            commands.append(WentDown(destination=destination, error=error))
        ids = tuple(e.message_id for e in batch)
        commands.append(Park(destination=destination, message_ids=ids))
        return commands + self._ended()

    def unparked(self, destination: bytes, count: int) -> None:
        """A `Probe` put `count` rows back; none means nothing waits for the destination."""
        if count == 0:
            self._outages.forget(destination)

    def probe_missed(self, destination: bytes, now_ms: int, *, not_before_ms: int = 0) -> None:
        """A probe found no home to try (none known, and a lookup found none): the destination
        stays down, its rows stay parked untouched, and it is probed again after the next
        delay, or at `not_before_ms` if later (when the next lookup may ask: a probe before
        would find the same nothing). A user known nowhere costs nothing per probe, however
        much waits for them, and a record learnt probes it at once (`home_connected`)."""
        self._outages.failed(destination, now_ms, homeless=True, not_before_ms=not_before_ms)

    def home_connected(self, destinations: Iterable[bytes]) -> bool:
        """A node connected that is a home of each of `destinations`: those that are down are
        probed at once (or again as soon as their probe ends). True if a probe is due now."""
        return self._outages.revive(destinations)

    def handle_timer(self, now_ms: int) -> list[OutboxCommand]:
        """What is due at `now_ms`: settling acked rows, probing down destinations."""
        commands: list[OutboxCommand] = []
        if self._settle_at_ms is not None and self._settle_at_ms <= now_ms:
            commands.extend(self._settle())
        for destination in self._outages.due_probes(now_ms):
            commands.append(Probe(destination=destination, limit=PROBE_ENTRIES))
        return commands

    def stop(self, now_ms: int) -> list[OutboxCommand]:
        """A clean stop: settle every acked row now, and hand every row still in hand back to
        the store, due at once (its lease is for a crash; a restart need not wait it out)."""
        commands: list[OutboxCommand] = [*self._settle()]
        for destination in sorted(self._queued):
            rows = [*self._in_flight.get(destination, ()), *self._queued[destination]]
            if not rows:
                continue
            first_ms = now_ms - len(rows)  # in their order, as `unpark` puts rows back
            plan = tuple((row.message_id, first_ms + i) for i, row in enumerate(rows))
            commands.append(Reschedule(destination=destination, plan=plan, error=_HANDED_BACK))
        self._held.clear()
        self._queued.clear()
        self._in_flight.clear()
        return commands

    def _settle(self) -> list[Settle]:
        self._settle_at_ms = None
        if not self._acked:
            return []
        acked, self._acked = self._acked, {}
        return [Settle(acked={d: tuple(ids) for d, ids in acked.items()})]

    # --- helpers ----------------------------------------------------------------------------

    def _batch_of(self, destination: bytes) -> list[E]:
        """The batch in flight for `destination`; a caller bug if there is none."""
        batch = self._in_flight.get(destination)
        if batch is None:
            raise LocalProtocolError("no batch in flight for this destination")
        return batch

    def _shrink(self, destination: bytes, failed: int) -> None:
        """A batch of `failed` rows found no home to take it: half that size next time."""
        self._sizes.pop(destination, None)  # re-inserted last: the newest is kept longest
        self._sizes[destination] = max(PROBE_ENTRIES, failed // 2)
        if len(self._sizes) > MAX_SIZED_DESTINATIONS:
            del self._sizes[next(iter(self._sizes))]

    def _grow(self, destination: bytes, acked: int) -> None:
        """A batch of `acked` rows was answered: one of the full size doubles it."""
        size = self._sizes.get(destination)
        if size is None or acked < size:
            return  # a probe, or the last rows: no news of what a full batch costs
        if size * 2 >= BATCH_ENTRIES:
            del self._sizes[destination]
        else:
            self._sizes[destination] = size * 2

    def _release(self, destination: bytes, entries: Iterable[E]) -> None:
        for entry in entries:
            self._held.discard((destination, entry.message_id))

    def _ended(self) -> list[OutboxCommand]:
        """A batch left the hand: if the pump waits for room, it has some now."""
        if not self._hand_full:
            return []
        self._hand_full = False
        return [TakeMore()]

    def _retry_plan(self, entries: Iterable[E], now_ms: int) -> tuple[tuple[MessageId, int], ...]:
        """Each row's next attempt after the §11.5.1 backoff for its attempts so far."""
        rng = self._rng
        return tuple((e.message_id, next_attempt_ms(e.attempts, now_ms, rng)) for e in entries)


_HANDED_BACK: Final = "handed back at a stop"


def _is_user(destination: bytes) -> bool:
    return destination_peer(destination) is None
