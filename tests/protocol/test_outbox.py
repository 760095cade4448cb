"""The outbox machine (protocol/outbox.py, SPEC §11.4, §11.5), driven without an event loop.

`transfer(outbox, homes, now_ms)` plays the pump: it takes due rows from a model of the stored
outbox (`Rows`), hands the machine's batches to fake home nodes that ack, and applies the store
commands to the model; time moves only when a test says so.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hearthmesh.protocol import outbox as outbox_module
from hearthmesh.protocol.backoff import BACKOFF_BASE_MS
from hearthmesh.protocol.deferred_rows import (
    DEFERRED_AGAIN_MS,
    DEFERRED_AGAIN_ROWS,
    MAX_DEFERRED_NOTED,
    DeferredRows,
)
from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.destinations import node_destination
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.outages import PROBE_MAX_MS
from hearthmesh.protocol.outbox import (
    BATCH_ENTRIES,
    LEASE_MS,
    PROBE_ENTRIES,
    SETTLE_EVERY_MS,
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
from hearthmesh.protocol.peer_id import peer_id_of_node_key

from ..conftest import counter_rng, examples

T0 = 1_700_000_000_000
BOB = b"\x02" * 32
CAROL = b"\x03" * 32
OWN_HOME = peer_id_of_node_key(b"\x07" * 32)
SIBLING = node_destination(OWN_HOME)


C = TypeVar("C")


def mid(n: int) -> MessageId:
    return MessageId(hashlib.sha256(n.to_bytes(8, "big")).digest())


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """An outbox row as the store hands it out."""

    destination: bytes
    message_id: MessageId
    attempts: int = 1


@dataclass(slots=True)
class _Stored:
    due_ms: int
    attempts: int
    order: int
    """Ties of `due_ms` go in the order rows were added (the store's history order)."""
    parked: bool = False


class Rows:
    """A model of the stored outbox: due queue, leases, parked rows (storage/outbox.py)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[bytes, MessageId], _Stored] = {}
        self.acked: list[MessageId] = []

    def add(self, destination: bytes, ids: Iterable[MessageId], due_ms: int) -> None:
        for message_id in ids:
            order = len(self.rows) + len(self.acked)
            self.rows[destination, message_id] = _Stored(due_ms=due_ms, attempts=0, order=order)

    def take_due(self, now_ms: int, limit: int, lease_ms: int = LEASE_MS) -> list[Row]:
        due = sorted(
            (s.due_ms, s.order, key)
            for key, s in self.rows.items()
            if not s.parked and s.due_ms <= now_ms
        )[:limit]
        taken = []
        for _, _, key in due:
            stored = self.rows[key]
            stored.due_ms, stored.attempts = now_ms + lease_ms, stored.attempts + 1
            taken.append(Row(destination=key[0], message_id=key[1], attempts=stored.attempts))
        return taken

    def parked(self, destination: bytes) -> list[MessageId]:
        return [m for (d, m), s in self.rows.items() if d == destination and s.parked]

    def apply(self, command: OutboxCommand, now_ms: int) -> int:
        match command:
            case Settle(acked=acked):
                for destination, ids in acked.items():
                    for message_id in ids:
                        del self.rows[destination, message_id]
                        self.acked.append(message_id)
            case Reschedule(destination=destination, plan=plan):
                for message_id, when in plan:
                    self.rows[destination, message_id].due_ms = when
            case Park(destination=destination, message_ids=ids):
                for message_id in ids:
                    self.rows[destination, message_id].parked = True
            case Probe(destination=destination, limit=limit):
                return self._unpark(destination, now_ms, limit)
            case UnparkAll(destination=destination):
                return self._unpark(destination, now_ms, len(self.rows))
        return 0

    def _unpark(self, destination: bytes, now_ms: int, limit: int) -> int:
        back = self.parked(destination)[:limit]
        for i, message_id in enumerate(back):  # due now, in their order
            stored = self.rows[destination, message_id]
            stored.parked, stored.due_ms = False, now_ms - len(back) + i
        return len(back)


@dataclass
class Home:
    """A home node: acks STORED (DUPLICATE for what it holds), or is away."""

    peer: str
    up: bool = True
    answer: Callable[[Row], AckStatus] | None = None
    takes_at_most: int | None = None
    """A loaded home: a larger batch is not answered within the ack bound (a failure)."""
    stored: list[MessageId] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def deliver(self, batch: Sequence[Row]) -> list[DeliveryResult] | None:
        if not self.up or (self.takes_at_most is not None and len(batch) > self.takes_at_most):
            return None
        self.batches.append(len(batch))
        results = []
        for row in batch:
            status = self.answer(row) if self.answer else AckStatus.STORED
            if status is AckStatus.STORED and row.message_id in self.stored:
                status = AckStatus.DUPLICATE
            elif status is AckStatus.STORED:
                self.stored.append(row.message_id)
            results.append(DeliveryResult(message_id=row.message_id, status=status))
        return results


class Outbox:
    """The machine with its stored rows: what a node's outbox is, minus the I/O."""

    def __init__(self, rows: Rows | None = None, *, label: str = "outbox") -> None:
        self.machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng(label))
        self.rows = rows or Rows()
        self.seen: list[OutboxCommand] = []
        self.machine.restored(sorted({d for (d, _), s in self.rows.rows.items() if s.parked}))

    def commands(self, kind: type[C]) -> list[C]:
        return [c for c in self.seen if isinstance(c, kind)]


def transfer(outbox: Outbox, homes: dict[bytes, Home], now_ms: int) -> None:
    """Run everything due at `now_ms`: timers, due rows, each destination's batches to its
    home until the outbox is quiet (the pump's work, synchronously)."""
    machine = outbox.machine
    pending: deque[OutboxCommand] = deque(machine.handle_timer(now_ms))
    while True:
        while pending:
            _perform(outbox, homes, pending.popleft(), now_ms)
        wanted = machine.entries_wanted()
        due_by_ms = machine.due_by_ms(now_ms)
        lease_ms = machine.lease_due_ms(now_ms) - due_by_ms
        taken = outbox.rows.take_due(due_by_ms, wanted, lease_ms) if wanted else []
        machine.taken(len(taken), wanted)
        if not taken:
            return
        pending.extend(machine.entries_ready(taken))


def _perform(outbox: Outbox, homes: dict[bytes, Home], command: OutboxCommand, now_ms: int) -> None:
    outbox.seen.append(command)
    machine = outbox.machine
    if isinstance(command, ServeDestination):
        destination = command.destination
        while (batch := machine.next_batch(destination)) is not None:
            steps = deque(machine.batch_built(destination, batch, [], now_ms))
            while steps:  # in order: the batch's outcome is written before the next goes
                step = steps.popleft()
                if isinstance(step, SendBatch):
                    outbox.seen.append(step)
                    home = homes[destination]
                    results = home.deliver(batch)
                    if results is None:  # up and no answer: too slow for that batch
                        failed = machine.send_failed(destination, "away", now_ms, slow=home.up)
                        steps.extend(failed)
                    else:
                        steps.extend(machine.ack_received(destination, home.peer, results, now_ms))
                else:
                    _perform(outbox, homes, step, now_ms)
    elif isinstance(command, Probe):
        machine.unparked(command.destination, outbox.rows.apply(command, now_ms))
    else:
        outbox.rows.apply(command, now_ms)


def send_one_by_one(outbox: Outbox, home: Home, destination: bytes, count: int) -> None:
    """`count` rows for `destination`, each stored and served before the next (as sends go)."""
    for n in range(count):
        outbox.rows.add(destination, [mid(n)], T0)
        transfer(outbox, {destination: home}, T0)


def delivered(outbox: Outbox) -> list[MessageId]:
    return [m for c in outbox.commands(Delivered) for m in c.message_ids]


# --- batches and the window -----------------------------------------------------------------


def test_rows_go_in_batches_oldest_first_one_batch_in_flight() -> None:
    outbox = Outbox()
    ids = [mid(n) for n in range(300)]
    outbox.rows.add(BOB, ids, T0)
    bob = Home("bob")
    transfer(outbox, {BOB: bob}, T0)
    assert bob.stored == ids
    assert bob.batches == [BATCH_ENTRIES, 300 - BATCH_ENTRIES]
    assert delivered(outbox) == ids


def test_a_destination_is_served_once_while_its_batch_is_out() -> None:
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    first = machine.entries_ready([Row(destination=BOB, message_id=mid(1))])
    assert first == [ServeDestination(destination=BOB)]
    assert machine.next_batch(BOB) == [Row(destination=BOB, message_id=mid(1))]
    assert machine.entries_ready([Row(destination=BOB, message_id=mid(2))]) == []  # queued
    with pytest.raises(LocalProtocolError):
        machine.next_batch(BOB)  # the window is one batch
    assert machine.batch_built(BOB, [Row(destination=BOB, message_id=mid(1))], [], T0) == [
        SendBatch(destination=BOB, relay_fallback=True)
    ]
    ack = [DeliveryResult(message_id=mid(1), status=AckStatus.STORED)]
    machine.ack_received(BOB, "bob", ack, T0)
    assert machine.next_batch(BOB) == [Row(destination=BOB, message_id=mid(2))]


def test_rows_left_out_of_a_batch_go_first_in_the_next_and_none_carried_is_a_retry() -> None:
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    rows = [Row(destination=BOB, message_id=mid(n)) for n in range(3)]
    machine.entries_ready(rows)
    batch = machine.next_batch(BOB)
    assert batch == rows
    machine.batch_built(BOB, rows[:1], rows[1:], T0)  # past the byte budget
    machine.ack_received(
        BOB, "bob", [DeliveryResult(message_id=mid(0), status=AckStatus.STORED)], T0
    )
    assert machine.next_batch(BOB) == rows[1:]
    commands = machine.batch_built(BOB, [], rows[1:], T0)  # no certificate for the sender
    assert isinstance(commands[0], Reschedule)
    assert commands[0].error == "no certificate for the sender device"
    assert [m for m, _ in commands[0].plan] == [mid(1), mid(2)]
    assert machine.next_batch(BOB) is None
    with pytest.raises(LocalProtocolError):
        machine.batch_built(BOB, [], [], T0)  # no batch in flight


def test_a_row_is_held_once_however_often_it_is_handed_in() -> None:
    """One owner: a row handed over as it was stored, then taken again from the store when its
    lease runs out while it waits in hand (a slow destination), is one delivery, not two; so is
    one acked but not yet settled."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    row = Row(destination=BOB, message_id=mid(1))
    assert machine.entries_ready([row]) == [ServeDestination(destination=BOB)]
    assert machine.next_batch(BOB) == [row]
    again = Row(destination=BOB, message_id=mid(1), attempts=2)  # the lease ran out
    assert machine.entries_ready([again]) == []
    machine.batch_built(BOB, [row], [], T0)
    machine.ack_received(
        BOB, "bob", [DeliveryResult(message_id=mid(1), status=AckStatus.STORED)], T0
    )
    assert machine.entries_ready([again]) == []  # acked; its row is settled at the next timer
    assert machine.next_batch(BOB) is None
    assert machine.handle_timer(T0 + SETTLE_EVERY_MS) == [Settle(acked={BOB: (mid(1),)})]
    assert machine.entries_ready([again]) == [ServeDestination(destination=BOB)]  # a new take


def test_the_hand_has_a_bound_and_a_batch_that_leaves_it_takes_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "MAX_HELD_ENTRIES", 3)
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    assert machine.entries_wanted() > 0
    machine.entries_ready([Row(destination=BOB, message_id=mid(n)) for n in range(3)])
    assert machine.entries_wanted() == 0
    batch = machine.next_batch(BOB)
    assert batch is not None
    machine.batch_built(BOB, batch, [], T0)
    results = [DeliveryResult(message_id=r.message_id, status=AckStatus.STORED) for r in batch]
    assert machine.ack_received(BOB, "bob", results, T0)[-1] == TakeMore()
    assert machine.entries_wanted() > 0


# --- what each ack status means (SPEC §11.4.1) ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "ends"),
    [
        (AckStatus.STORED, True),
        (AckStatus.DUPLICATE, True),
        (AckStatus.REJECTED, True),
        (AckStatus.RELAYED, False),
        (AckStatus.DEFERRED, False),
    ],
)
def test_each_ack_status_ends_the_delivery_or_keeps_it(status: AckStatus, ends: bool) -> None:
    outbox = Outbox()
    outbox.rows.add(BOB, [mid(1)], T0)
    transfer(outbox, {BOB: Home("bob", answer=lambda row: status)}, T0)
    if ends:
        assert delivered(outbox) == [mid(1)]
        assert outbox.commands(Reschedule) == []
        assert outbox.rows.rows  # the row leaves the store at the settle timer, not before
        assert outbox.machine.timer_ms() == T0 + SETTLE_EVERY_MS
        transfer(outbox, {}, T0 + SETTLE_EVERY_MS - 1)
        assert outbox.rows.rows
        transfer(outbox, {}, T0 + SETTLE_EVERY_MS)
        assert not outbox.rows.rows and outbox.rows.acked == [mid(1)]
    else:
        assert delivered(outbox) == []
        (reschedule,) = outbox.commands(Reschedule)
        assert reschedule.error == "deferred by bob"
        assert outbox.rows.rows[BOB, mid(1)].due_ms > T0  # tried again later, still stored
    rejected = outbox.commands(Rejected)
    assert len(rejected) == (status is AckStatus.REJECTED)


def test_an_answer_for_another_envelope_keeps_the_row() -> None:
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    row = Row(destination=BOB, message_id=mid(1))
    machine.entries_ready([row])
    machine.next_batch(BOB)
    machine.batch_built(BOB, [row], [], T0)
    wrong = [DeliveryResult(message_id=mid(2), status=AckStatus.STORED)]
    (command,) = machine.ack_received(BOB, "bob", wrong, T0)
    assert isinstance(command, Reschedule) and [m for m, _ in command.plan] == [mid(1)]
    with pytest.raises(LocalProtocolError):
        machine.ack_received(BOB, "bob", wrong, T0)  # nothing in flight any more


def test_a_deferred_row_backs_off_by_its_attempts() -> None:
    """SPEC §11.5.1: after the n-th attempt, uniformly in [d/2, d], d = 250 ms * 2^(n-1)."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    rows = [Row(destination=BOB, message_id=mid(n), attempts=n) for n in range(1, 6)]
    machine.entries_ready(rows)
    machine.next_batch(BOB)
    machine.batch_built(BOB, rows, [], T0)
    deferred = [DeliveryResult(message_id=r.message_id, status=AckStatus.DEFERRED) for r in rows]
    (reschedule,) = machine.ack_received(BOB, "bob", deferred, T0)
    assert isinstance(reschedule, Reschedule)
    for (_, when), row in zip(reschedule.plan, rows, strict=True):
        nominal = BACKOFF_BASE_MS << (row.attempts - 1)
        assert T0 + nominal // 2 <= when <= T0 + nominal


def test_rows_a_home_deferred_come_due_again_once_it_stores_a_later_batch() -> None:
    """SPEC §11.5.1: a home that deferred a row (a room's key, for a room it did not hold
    yet) and then stores a later batch of ours has the row due again at once, not after the
    backoff grown while it waited; not within DEFERRED_AGAIN_MS of the deferral."""
    outbox = Outbox()
    knows_room = False
    bob = Home("bob", answer=lambda row: AckStatus.STORED if knows_room else AckStatus.DEFERRED)
    outbox.rows.add(BOB, [mid(1)], T0)
    now = deferred_at = T0
    for _ in range(8):  # deferred 8 times: its backoff is 16-32 s now
        deferred_at = now
        transfer(outbox, {BOB: bob}, now)
        now = outbox.rows.rows[BOB, mid(1)].due_ms
    assert now - deferred_at >= 16_000
    assert outbox.machine.deferred_due_again == 0
    now = deferred_at + DEFERRED_AGAIN_MS
    knows_room = True
    outbox.rows.add(BOB, [mid(2)], now)  # our next message: stored at once
    transfer(outbox, {BOB: bob}, now)
    assert bob.stored == [mid(2), mid(1)]  # the key right after it, not a backoff later
    assert outbox.commands(Reschedule)[-1].error == "due again: its home stores our envelopes now"
    assert outbox.machine.deferred_due_again == 1  # counted for the node's status


def test_rows_deferred_again_at_once_are_few_and_not_too_often() -> None:
    """A home that keeps deferring some rows while it stores others is sent the deferred ones
    again at most DEFERRED_AGAIN_ROWS at a time, once per DEFERRED_AGAIN_MS: within the
    deferrals it grants one sender (SPEC §12.5)."""
    rows = DeferredRows()
    rows.note(BOB, [mid(n) for n in range(40)], T0)
    assert rows.due(BOB, T0 + DEFERRED_AGAIN_MS - 1) == []
    assert rows.due(BOB, T0 + DEFERRED_AGAIN_MS) == [mid(n) for n in range(DEFERRED_AGAIN_ROWS)]
    rows.note(BOB, [mid(0)], T0 + DEFERRED_AGAIN_MS)  # deferred once more
    assert rows.due(BOB, T0 + 2 * DEFERRED_AGAIN_MS - 1) == []
    rows.forget(BOB, [mid(16)])  # acked meanwhile
    assert rows.due(BOB, T0 + 2 * DEFERRED_AGAIN_MS) == [mid(n) for n in range(17, 33)]
    assert len(rows) == 40 - 32 - 1 + 1
    for n in range(MAX_DEFERRED_NOTED + 1):  # bounded: the destination noted first goes
        rows.note(CAROL + n.to_bytes(2, "big"), [mid(n)], T0)
    assert len(rows) == MAX_DEFERRED_NOTED and rows.due(BOB, T0 + 10 * DEFERRED_AGAIN_MS) == []


# --- down destinations: park, relay, probe, revive (SPEC §11.5.2) ---------------------------


def test_a_down_destination_parks_and_new_batches_are_relayed_then_parked() -> None:
    outbox = Outbox()
    bob = Home("bob", up=False)
    outbox.rows.add(BOB, [mid(1)], T0)
    transfer(outbox, {BOB: bob}, T0)
    assert outbox.commands(WentDown) == [WentDown(destination=BOB, error="away")]
    assert outbox.rows.parked(BOB) == [mid(1)]
    outbox.rows.add(BOB, [mid(2)], T0)
    transfer(outbox, {BOB: bob}, T0)  # one failure may be a hiccup: its homes are tried
    assert len(outbox.commands(SendBatch)) == 2 and len(outbox.commands(WentDown)) == 1
    outbox.rows.add(BOB, [mid(3)], T0)
    transfer(outbox, {BOB: bob}, T0)  # down twice in a row: relayed and parked, homes untried
    assert len(outbox.commands(SendBatch)) == 2
    assert outbox.commands(RelayBatch) == [RelayBatch(destination=BOB)]
    assert outbox.rows.parked(BOB) == [mid(1), mid(2), mid(3)]
    assert outbox.commands(Reschedule) == []  # parked rows are not retried one by one


def test_our_own_other_home_is_never_relayed_to() -> None:
    outbox = Outbox()
    sibling = Home(OWN_HOME, up=False)
    send_one_by_one(outbox, sibling, SIBLING, 3)
    sends = outbox.commands(SendBatch)
    assert sends and all(not s.relay_fallback for s in sends)
    assert outbox.commands(RelayBatch) == []
    assert outbox.rows.parked(SIBLING) == [mid(0), mid(1), mid(2)]


def test_a_probe_after_the_backoff_brings_everything_back_in_order() -> None:
    outbox = Outbox()
    bob = Home("bob", up=False)
    send_one_by_one(outbox, bob, BOB, 3)
    probe_at = outbox.machine.timer_ms()
    assert probe_at is not None and T0 < probe_at <= T0 + PROBE_MAX_MS
    transfer(outbox, {BOB: bob}, probe_at - 1)
    assert outbox.commands(Probe) == []
    bob.up = True
    transfer(outbox, {BOB: bob}, probe_at)
    assert outbox.commands(Probe) == [Probe(destination=BOB, limit=PROBE_ENTRIES)]
    assert outbox.commands(UnparkAll) == [UnparkAll(destination=BOB)]
    assert bob.stored == [mid(0), mid(1), mid(2)]
    assert outbox.machine.down() == []


def test_a_probe_that_finds_nothing_parked_ends_the_outage() -> None:
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    machine.restored([BOB])
    assert machine.timer_ms() == 0
    assert machine.handle_timer(T0) == [Probe(destination=BOB, limit=PROBE_ENTRIES)]
    machine.unparked(BOB, 0)
    assert machine.down() == [] and machine.timer_ms() is None


def test_a_probe_of_a_user_known_nowhere_moves_nothing_and_waits_its_delay() -> None:
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    machine.restored([BOB])
    assert machine.handle_timer(T0) == [Probe(destination=BOB, limit=PROBE_ENTRIES)]
    assert machine.handle_timer(T0) == []  # under way: not probed twice
    machine.probe_missed(BOB, T0)  # no record, and the lookup found none
    assert machine.down() == [BOB]
    probe_at = machine.timer_ms()
    assert probe_at is not None and T0 < probe_at <= T0 + PROBE_MAX_MS
    assert machine.handle_timer(probe_at - 1) == []
    assert machine.handle_timer(probe_at) == [Probe(destination=BOB, limit=PROBE_ENTRIES)]


def test_a_user_known_nowhere_is_probed_when_its_lookup_may_ask_or_at_once_when_known() -> None:
    """SPEC §11.5.2, §13.5: a probe of a user known nowhere waits for the user's next lookup
    (every probe before it would find the same nothing: a group's 1,000 absent members were
    probed every 5 s each); a record learnt (`home_connected`) still probes it at once."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    machine.restored([BOB, CAROL])
    assert len(machine.handle_timer(T0)) == 2
    asks_ms = T0 + 600_000  # when the lookups allow the next DHT lookup of each
    machine.probe_missed(BOB, T0, not_before_ms=asks_ms)
    machine.probe_missed(CAROL, T0, not_before_ms=asks_ms)
    assert machine.timer_ms() == asks_ms
    assert machine.handle_timer(T0 + PROBE_MAX_MS) == []  # not the outage's few seconds
    assert machine.home_connected([CAROL])  # carol's record came by hello or presence
    assert machine.handle_timer(T0 + PROBE_MAX_MS) == [
        Probe(destination=CAROL, limit=PROBE_ENTRIES)
    ]
    assert machine.handle_timer(asks_ms - 1) == []
    assert machine.handle_timer(asks_ms) == [Probe(destination=BOB, limit=PROBE_ENTRIES)]


def test_a_user_known_nowhere_is_absent_until_a_home_of_it_is_known() -> None:
    """SPEC §11.5.2: a user whose batch found no home to try is absent (its envelopes leave a
    marker, not an entry each): no record names a home, so it is no hiccup; a failure with a
    home to try, a home that connects or a record learnt (`home_connected`), or an ack end
    that; our own homes never are."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())

    def fail(destination: bytes, now_ms: int, *, homeless: bool) -> None:
        machine.entries_ready([Row(destination=destination, message_id=mid(now_ms))])
        batch = machine.next_batch(destination)
        assert batch is not None
        machine.batch_built(destination, batch, [], now_ms)
        machine.send_failed(destination, "no home", now_ms, homeless=homeless)

    assert not machine.absent(BOB)
    fail(BOB, T0, homeless=True)
    assert machine.absent(BOB)  # at the first: no home to try is no hiccup
    fail(CAROL, T0, homeless=False)
    fail(CAROL, T0 + 1, homeless=False)
    assert not machine.absent(CAROL)  # down, but a home to try: entries, parked
    assert machine.home_connected([BOB])  # a record of bob's home came
    assert not machine.absent(BOB)
    machine.probe_missed(CAROL, T0 + 2)  # its record went, and a lookup found none
    assert machine.absent(CAROL)
    for _ in range(2):
        fail(SIBLING, T0 + 3, homeless=True)
    assert not machine.absent(SIBLING)
    assert Probe(destination=CAROL, limit=PROBE_ENTRIES) in machine.handle_timer(T0 + 10**6)
    assert machine.absent(CAROL)  # its probe moves nothing until a lookup finds a record
    machine.entries_ready([Row(destination=CAROL, message_id=mid(99))])
    batch = machine.next_batch(CAROL)
    assert batch is not None
    machine.batch_built(CAROL, batch, [], T0 + 3)
    ok = [DeliveryResult(message_id=mid(99), status=AckStatus.STORED, code=0)]
    machine.ack_received(CAROL, "carol-home", ok, T0 + 4)
    assert not machine.absent(CAROL)


def test_a_home_that_connects_is_probed_at_once() -> None:
    outbox = Outbox()
    bob = Home("bob", up=False)
    send_one_by_one(outbox, bob, BOB, 3)
    assert not outbox.machine.home_connected([CAROL])  # not one of bob's
    bob.up = True
    assert outbox.machine.home_connected([BOB])
    transfer(outbox, {BOB: bob}, T0 + 1)
    assert bob.stored == [mid(0), mid(1), mid(2)]


def test_a_down_homes_entries_wait_parked_and_go_when_it_connects() -> None:
    """SPEC §11.5.2, clocked (was ~15 s of real time on the real lease): bob's home is away, so
    alice's outbox parks what it has for him (it does not retry each entry), keeps it parked
    across a restart, and sends it all, in order, as soon as bob's home connects; a row that
    was in flight when alice's node died (no clean stop) is taken by the restarted outbox at
    once, not when its lease runs out, and is sent once.
    """
    rows = Rows()
    outbox = Outbox(rows)
    bob = Home("bob", up=False)
    sent = [mid(n) for n in range(40)]
    send_one_by_one(outbox, bob, BOB, len(sent))  # as alice sends: one row a send, due at once
    assert rows.parked(BOB) == sent
    assert outbox.commands(Reschedule) == [] and delivered(outbox) == []
    in_flight = mid(40)  # alice's node dies while this row's batch is out: leased, held by none
    rows.add(BOB, [in_flight], T0)
    assert [r.message_id for r in rows.take_due(T0, 10)] == [in_flight]

    restarted = Outbox(rows, label="restarted")  # parked rows wait on across the restart
    transfer(restarted, {BOB: bob}, T0 + 1_000)  # probed at once, and bob is still away
    assert rows.parked(BOB) == [*sent, in_flight] and restarted.machine.down() == [BOB]
    bob.up = True
    assert restarted.machine.home_connected([BOB])
    transfer(restarted, {BOB: bob}, T0 + 2_000)
    assert bob.stored == [*sent, in_flight] and sum(bob.batches) == len(sent) + 1
    assert restarted.machine.down() == []
    transfer(restarted, {BOB: bob}, T0 + 2_000 + SETTLE_EVERY_MS)
    assert rows.rows == {}
    transfer(restarted, {BOB: bob}, T0 + LEASE_MS + SETTLE_EVERY_MS)
    assert sum(bob.batches) == len(sent) + 1  # nothing comes back when the old lease ends


def test_rows_a_killed_outbox_held_go_at_once_after_the_restart_not_after_their_lease() -> None:
    """SPEC §11.5.2: a kill -9 leaves the rows in hand leased; the next outbox of the node holds
    none of them, so its first takes count every row due within a lease as due (found in
    `simulate` R1: a sender killed with its batches out resent them LEASE_MS after they were
    taken, seconds after it was back). Once a take comes back short, due means due again: a
    row backing off waits its time."""
    rows = Rows()
    ids = [mid(n) for n in range(3)]
    rows.add(BOB, ids, T0)
    dead: OutboxMachine[Row] = OutboxMachine(rng=counter_rng("dead"))
    for command in dead.entries_ready(rows.take_due(T0, 10)):
        assert isinstance(command, ServeDestination)
        assert dead.next_batch(BOB) == [Row(destination=BOB, message_id=m, attempts=1) for m in ids]
    # killed here, its batch out: no ack, no stop

    bob = Home("bob")
    restarted = Outbox(rows, label="restarted")
    transfer(restarted, {BOB: bob}, T0 + 3_000)
    assert bob.stored == ids and bob.batches == [3]  # not at T0 + LEASE_MS

    later = mid(3)
    rows.add(BOB, [later], T0 + 3_000 + 5_000)  # due in 5 s: the start is over, it waits
    transfer(restarted, {BOB: bob}, T0 + 3_000 + 4_999)
    assert bob.stored == ids
    transfer(restarted, {BOB: bob}, T0 + 3_000 + 5_000)
    assert bob.stored == [*ids, later]


def test_a_reached_destination_before_it_failed_twice_has_no_outage_left() -> None:
    outbox = Outbox()
    bob = Home("bob", up=False)
    outbox.rows.add(BOB, [mid(1)], T0)
    transfer(outbox, {BOB: bob}, T0)
    assert outbox.machine.down() == [BOB]
    bob.up = True
    outbox.rows.add(BOB, [mid(2)], T0)
    transfer(outbox, {BOB: bob}, T0)  # a new row goes to the home and finds it back
    assert outbox.machine.down() == []
    assert outbox.commands(UnparkAll) == [UnparkAll(destination=BOB)]
    assert bob.stored == [mid(2), mid(1)]  # the parked one follows, due at once


def test_a_home_too_slow_for_a_full_batch_gets_its_backlog_in_smaller_ones() -> None:
    """SPEC §11.5.2: a home that cannot store a full batch within the ack bound (a loaded
    machine: simulate R1 at load 50 flapped 'reachable again' / TimeoutError for minutes)
    failed the same full batch each time its outage ended, a probe's 8 rows a round (75 rounds
    here). Batches halve after a failure and double after each full one acked, so it gets
    everything within a few rounds, each row once (the receiver releases in sequence
    order, SPEC §8)."""
    outbox = Outbox()
    ids = [mid(n) for n in range(600)]
    outbox.rows.add(BOB, ids, T0)
    bob = Home("bob", takes_at_most=40)
    for round_ in range(5):  # a round: the longest probe delay
        transfer(outbox, {BOB: bob}, T0 + round_ * PROBE_MAX_MS)
    assert sorted(bob.stored) == sorted(ids) and sum(bob.batches) == len(ids)
    assert max(bob.batches) <= 40 and bob.stored[:8] == ids[:8]  # the probe: the oldest


def test_a_backlog_after_a_partition_goes_in_full_batches_once_the_probe_is_acked() -> None:
    """SPEC §11.5.2: batches that failed because a partition cut the path (not a home too
    slow for them) say nothing of what a full batch costs the home. Halving after them left
    the destination at 8-row batches, so the backlog of the partition reached the home in
    rounds of 8, 16, 32, 64, 128 after the heal (simulate R1: 5 round trips, seconds each on a
    loaded machine, before the last message of the partition arrived)."""
    outbox = Outbox()
    bob = Home("bob")
    send_one_by_one(outbox, bob, BOB, 2)  # live: a row a batch
    bob.up = False  # the partition
    now = T0
    for n in range(2, 300):  # sends go on meanwhile: parked after the second failure
        outbox.rows.add(BOB, [mid(n)], now)
        transfer(outbox, {BOB: bob}, now)
        now += 100
    assert outbox.machine.down() == [BOB] and bob.batches == [1, 1]
    bob.up = True  # the heal: the next probe finds the home
    transfer(outbox, {BOB: bob}, now + PROBE_MAX_MS)
    assert sorted(bob.stored) == sorted(mid(n) for n in range(300))
    assert bob.batches == [1, 1, PROBE_ENTRIES, BATCH_ENTRIES, 300 - 2 - PROBE_ENTRIES - 256]


def test_a_clean_stop_settles_and_hands_back_the_rows_in_hand_in_order() -> None:
    """The lease is for a crash: after a clean stop, a restart takes the rows that were in hand
    at once, in their order, instead of waiting LEASE_MS for them."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    rows = [Row(destination=BOB, message_id=mid(n)) for n in range(4)]
    machine.entries_ready(rows)
    batch = machine.next_batch(BOB)
    assert batch == rows
    machine.batch_built(BOB, rows[:2], rows[2:], T0)
    results = [DeliveryResult(message_id=mid(0), status=AckStatus.STORED)] * 2
    machine.ack_received(BOB, "bob", results, T0)  # mid(1) answered for another: rescheduled
    machine.entries_ready([Row(destination=CAROL, message_id=mid(9))])
    machine.next_batch(BOB)  # mid(2), mid(3) in flight when the node stops
    settle, *back = machine.stop(T0 + 5)
    assert settle == Settle(acked={BOB: (mid(0),)})
    assert back == [
        Reschedule(
            destination=BOB,
            plan=((mid(2), T0 + 3), (mid(3), T0 + 4)),
            error="handed back at a stop",
        ),
        Reschedule(destination=CAROL, plan=((mid(9), T0 + 4),), error="handed back at a stop"),
    ]
    assert machine.entries_wanted() > 0 and machine.next_batch(BOB) is None


# --- against a model: every row reaches its home once (Hypothesis) ---------------------------

DESTINATIONS = (BOB, CAROL, SIBLING)


class OutboxAgainstHomes(RuleBasedStateMachine):
    """Rows are added, homes come and go, answer DEFERRED now and then, time passes, the node
    restarts cleanly: once every home is up for long enough, each row has reached its home,
    exactly once (a home never answers DUPLICATE), and nothing is left in the store."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.added: dict[bytes, list[MessageId]] = {d: [] for d in DESTINATIONS}
        self.defer: set[MessageId] = set()
        self.homes = {d: Home(f"home-{d.hex()[:4]}", answer=self._answer) for d in DESTINATIONS}
        self.outbox = Outbox()
        self.count = 0

    def _answer(self, row: Row) -> AckStatus:
        if row.message_id in self.defer:
            self.defer.discard(row.message_id)  # deferred once, then taken
            return AckStatus.DEFERRED
        return AckStatus.STORED

    @rule(destination=st.sampled_from(DESTINATIONS), many=st.integers(1, 3), defer=st.booleans())
    def send(self, destination: bytes, many: int, defer: bool) -> None:
        ids = [mid(self.count + n) for n in range(many)]
        self.count += many
        self.added[destination] += ids
        if defer:
            self.defer.add(ids[0])
        self.outbox.rows.add(destination, ids, self.now)
        transfer(self.outbox, self.homes, self.now)

    @rule(destination=st.sampled_from(DESTINATIONS), up=st.booleans())
    def home(self, destination: bytes, up: bool) -> None:
        self.homes[destination].up = up
        if up and self.outbox.machine.home_connected([destination]):
            transfer(self.outbox, self.homes, self.now)

    @rule(ms=st.sampled_from([1, SETTLE_EVERY_MS, BACKOFF_BASE_MS, PROBE_MAX_MS, LEASE_MS]))
    def wait(self, ms: int) -> None:
        self.now += ms
        transfer(self.outbox, self.homes, self.now)

    @rule()
    def restart(self) -> None:
        for command in self.outbox.machine.stop(self.now):
            self.outbox.rows.apply(command, self.now)
        self.outbox = Outbox(self.outbox.rows, label=f"restart {self.now}")

    @invariant()
    def never_twice(self) -> None:
        for home in self.homes.values():
            assert len(home.stored) == len(set(home.stored))

    def teardown(self) -> None:
        for home in self.homes.values():
            home.up = True
        for _ in range(20):  # probes, backoffs and leases all run out within this
            self.now += PROBE_MAX_MS
            transfer(self.outbox, self.homes, self.now)
        for destination, home in self.homes.items():
            assert sorted(home.stored) == sorted(self.added[destination])
        assert self.outbox.rows.rows == {}


OutboxAgainstHomes.TestCase.settings = settings(
    max_examples=examples(40), stateful_step_count=30, deadline=None
)
TestOutboxAgainstHomes = OutboxAgainstHomes.TestCase


def test_a_user_no_record_names_is_absent_before_any_batch_of_it_failed() -> None:
    """SPEC §11.5.2: the pump tells the machine, before an envelope is stored, of a recipient
    no record names: it is absent at once (a marker, not an entry whose batch would fail, be
    parked and be relayed first), and its probe (the lookup) comes after the first failure's
    delay. A user down with a home to try, and our own homes, stay as they are."""
    machine: OutboxMachine[Row] = OutboxMachine(rng=counter_rng())
    machine.known_nowhere(BOB, T0)
    assert machine.absent(BOB)
    assert machine.handle_timer(T0) == []
    assert Probe(destination=BOB, limit=PROBE_ENTRIES) in machine.handle_timer(T0 + 10**6)
    machine.entries_ready([Row(destination=CAROL, message_id=mid(1))])
    batch = machine.next_batch(CAROL)
    assert batch is not None
    machine.batch_built(CAROL, batch, [], T0)
    machine.send_failed(CAROL, "no answer", T0)  # down, a home to try: parked entries
    machine.known_nowhere(CAROL, T0)  # its record went meanwhile
    assert not machine.absent(CAROL)
    machine.known_nowhere(SIBLING, T0)
    assert not machine.absent(SIBLING)
    machine.home_connected([BOB])  # a record of his home came (his probe is under way)
    assert not machine.absent(BOB)
