"""One simulated home node: the sans-I/O machines with a dict for a store (SPEC §20.3).

`SimNode` runs the real `OutboxMachine` (sending side, SPEC §11.4-11.5) and `SenderReleases`
(receiving side, SPEC §8) and does what the node's pumps do around them, with the store kept in
plain dicts that survive `crash` / `restart` while the machines do not. What goes on the wire
is handed to the world (`Network`), which decides what arrives.

State owned here: per node, the stored part (envelopes by id and by sender, outbox rows, saved
release progress, the log the app was shown, the next own sequence number) and the part a
crash loses (both machines, the batch out per destination).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, KeyPair, Rng, UserId
from hearthmesh.protocol.outbox import (
    LEASE_MS,
    Delivered,
    OutboxCommand,
    OutboxMachine,
    Park,
    Probe,
    Rejected,
    Reschedule,
    SendBatch,
    ServeDestination,
    Settle,
    TakeMore,
    UnparkAll,
)
from hearthmesh.protocol.release import Sender, SenderReleases, Step

__all__ = ["Network", "Row", "SimNode"]


@dataclass(slots=True)
class Row:
    """One stored outbox row: an envelope owed to one destination."""

    destination: bytes
    message_id: MessageId
    order: int
    """Insertion order: rows come due oldest first."""
    due_ms: int
    attempts: int = 0
    parked: bool = False


class Network(Protocol):
    """What a node asks of the world."""

    def send(self, node: SimNode, destination: bytes, envelopes: list[Envelope]) -> None: ...

    def acked(self, node: SimNode, destination: bytes, ids: tuple[MessageId, ...]) -> None: ...

    def violation(self, text: str) -> None: ...


class SimNode:
    """A home node of one user with one device, in one room shared with every other node."""

    def __init__(self, index: int, key: KeyPair, room: RoomId, network: Network, rng: Rng) -> None:
        self.index = index
        self.key = key
        self.user = UserId(key.public)
        self.room = room
        self._network = network
        self._rng = rng
        # stored: survives a crash
        self.stored: dict[MessageId, Envelope] = {}
        self.by_sender: dict[Sender, dict[int, Envelope]] = {}
        self.outbox: dict[tuple[bytes, MessageId], Row] = {}
        self.progress: dict[Sender, int] = {}
        self.app: list[Envelope] = []
        self.next_seq = 1
        self._rows = 0
        # volatile
        self.up = True
        self.epoch = 0
        """Counts restarts: an answer for an earlier life finds no batch to answer."""
        self._start()

    def _start(self) -> None:
        self.machine: OutboxMachine[Row] = OutboxMachine(rng=self._rng)
        self.releases = SenderReleases()
        self.flight: dict[bytes, list[Row]] = {}
        self.machine.restored(sorted({r.destination for r in self.outbox.values() if r.parked}))

    # --- life -------------------------------------------------------------------------------

    def crash(self) -> None:
        """kill -9: everything but the store is gone."""
        self.up = False
        self.epoch += 1

    def restart(self, now_ms: int) -> None:
        self.up = True
        self._start()
        self.take(now_ms)

    # --- the sending side -------------------------------------------------------------------

    def write(self, destinations: list[bytes], now_ms: int) -> Envelope:
        """The user sends a message: stored with its outbox rows in one step (SPEC §12.6)."""
        envelope = seal(
            self.key,
            kind=Kind.MESSAGE,
            room=self.room,
            sender_user=self.user,
            seq=self.next_seq,
            hlc=Timestamp(wall_ms=now_ms, counter=self.next_seq % 1000),
            content_type="text/plain",
            body=f"{self.index}:{self.next_seq}".encode(),
        )
        self.next_seq += 1
        self._store(envelope)
        self._release(envelope)  # our own history is shown as written
        for destination in destinations:
            self._rows += 1
            row = Row(destination, envelope.message_id, self._rows, due_ms=now_ms)
            self.outbox[(destination, envelope.message_id)] = row
        self.take(now_ms)
        return envelope

    def take(self, now_ms: int) -> None:
        """Hand due rows to the machine, each leased until LEASE_MS from now (a crash)."""
        wanted = self.machine.entries_wanted()
        due = sorted(
            (r for r in self.outbox.values() if not r.parked and r.due_ms <= now_ms),
            key=lambda r: (r.due_ms, r.order),
        )[:wanted]
        for row in due:
            row.attempts += 1
            row.due_ms = now_ms + LEASE_MS
        self.handle(self.machine.entries_ready(due), now_ms)

    def tick(self, now_ms: int) -> None:
        timer = self.machine.timer_ms()
        if timer is not None and timer <= now_ms:
            self.handle(self.machine.handle_timer(now_ms), now_ms)
        self.take(now_ms)

    def answered(self, destination: bytes, results: list[DeliveryResult], now_ms: int) -> None:
        self.flight.pop(destination, None)
        self.handle(self.machine.ack_received(destination, "home", results, now_ms), now_ms)
        self.serve(destination, now_ms)

    def failed(self, destination: bytes, now_ms: int) -> None:
        self.flight.pop(destination, None)
        self.handle(self.machine.send_failed(destination, "no answer", now_ms), now_ms)
        self.serve(destination, now_ms)

    def serve(self, destination: bytes, now_ms: int) -> None:
        """Build and send the destination's batches until one is out or none is left."""
        while destination not in self.flight:
            batch = self.machine.next_batch(destination)
            if batch is None:
                return
            self.flight[destination] = batch
            commands = self.machine.batch_built(destination, batch, [], now_ms)
            if not any(isinstance(c, SendBatch) for c in commands):
                del self.flight[destination]
            self.handle(commands, now_ms)

    def handle(self, commands: list[OutboxCommand], now_ms: int) -> None:
        for command in commands:
            match command:
                case ServeDestination(destination=d):
                    self.serve(d, now_ms)
                case SendBatch(destination=d):
                    wires = [self.stored[r.message_id] for r in self.flight[d]]
                    self._network.send(self, d, wires)
                case Park(destination=d, message_ids=ids):
                    for mid in ids:
                        self.outbox[(d, mid)].parked = True
                case Reschedule(destination=d, plan=plan):
                    for mid, due_ms in plan:
                        self.outbox[(d, mid)].due_ms = due_ms
                case Probe(destination=d, limit=limit):
                    self.machine.unparked(d, self._unpark(d, now_ms, limit))
                    self.take(now_ms)
                case UnparkAll(destination=d):
                    self._unpark(d, now_ms, None)
                    self.take(now_ms)
                case Settle(acked=acked):
                    for d, ids in acked.items():
                        for mid in ids:
                            self.outbox.pop((d, mid), None)
                case Delivered(destination=d, message_ids=ids):
                    self._network.acked(self, d, ids)
                case Rejected(message_id=mid, code=code):
                    self._network.violation(f"node {self.index}: {mid.hex()[:8]} rejected {code}")
                case TakeMore():
                    self.take(now_ms)
                case _:
                    pass  # RelayBatch (no relays here), WentDown (a log line)

    def _unpark(self, destination: bytes, now_ms: int, limit: int | None) -> int:
        parked = sorted(
            (r for r in self.outbox.values() if r.destination == destination and r.parked),
            key=lambda r: r.order,
        )[:limit]
        for row in parked:
            row.parked, row.due_ms = False, now_ms
        return len(parked)

    # --- the receiving side -----------------------------------------------------------------

    def receive(self, envelopes: list[Envelope]) -> list[DeliveryResult]:
        """Store a batch, release what is in order, then answer (ack after the commit)."""
        results = []
        for envelope in envelopes:
            new = envelope.message_id not in self.stored
            if new:
                self._store(envelope)
            status = AckStatus.STORED if new else AckStatus.DUPLICATE
            results.append(DeliveryResult(message_id=envelope.message_id, status=status))
            self._release(envelope)
        return results

    def _store(self, envelope: Envelope) -> None:
        self.stored[envelope.message_id] = envelope
        sender = (envelope.room, DeviceId(envelope.sender_device))
        self.by_sender.setdefault(sender, {})[envelope.seq] = envelope

    def _release(self, envelope: Envelope) -> None:
        sender = (envelope.room, DeviceId(envelope.sender_device))
        if not self.releases.knows(sender):
            stored = self.by_sender.get(sender, {})
            next_seq = self.progress.get(sender, 1)
            self.releases.resume(
                sender, UserId(envelope.sender_user), next_seq, last_stored=max(stored, default=0)
            )
        step = self.releases.offer(envelope)
        self._shown(sender, step)
        for progress in self.releases.progress():
            self.progress[(progress.room, progress.device)] = progress.next_seq

    def _shown(self, sender: Sender, step: Step) -> None:
        while True:
            self.app.extend(step.released)
            if step.read_from is None:
                return
            stored = self.by_sender[sender]
            later = [stored[s] for s in sorted(stored) if s >= step.read_from]
            step = self.releases.offer_read_back(sender, later)
