"""A deterministic mesh simulator over the sans-I/O machines, with invariants (SPEC §20.3).

`simulate(SimConfig(seed=..., steps=...))` builds `nodes` `SimNode`s in one room and runs a
seeded script: users write, the clock moves, frames and acks are lost or delayed, the mesh is
split and healed, nodes are killed and restarted from what they stored. After every step it
checks the invariants of SPEC §20.3 and, at the end, heals everything and checks that every
node converged. The same seed gives the same run, so a failure is replayed by its seed.

State owned here: the world of one run (clock, nodes, frames in flight, partition, the acks
each sender was given) and the report.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from hearthmesh.protocol.delivery import DeliveryResult
from hearthmesh.protocol.digest import history_digest
from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.hlc import encode_timestamp
from hearthmesh.protocol.identity import keypair_from_seed
from hearthmesh.protocol.reconcile import Reconciler, SortedItems

from .sim_node import SimNode

__all__ = ["SimConfig", "SimReport", "World", "simulate"]

MAX_ROUNDS: Final = 64
"""Reconciliation messages one exchange may take before it counts as a violation."""
TIMEOUT_MS: Final = 2_000
"""How long a sender waits for an ack that never comes before it reports the send failed."""
SETTLE_STEPS: Final = 20_000
"""Most clock steps the closing phase may take to converge before the run counts as failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    seed: int = 0
    steps: int = 1_000
    nodes: int = 4
    loss: float = 0.1
    """Chance that a frame (a batch or its ack) is lost."""
    max_delay_ms: int = 200
    restarts: bool = True
    partitions: bool = True


@dataclass(slots=True, kw_only=True)
class SimReport:
    seed: int
    steps: int
    nodes: int
    written: int = 0
    frames_sent: int = 0
    frames_lost: int = 0
    acked: int = 0
    crashes: int = 0
    partitions: int = 0
    syncs: int = 0
    """Reconciliations (SPEC §21) between two linked nodes."""
    synced: int = 0
    """Envelopes one of them lacked and got by a reconciliation."""
    converged: bool = False
    converge_ms: int | None = None
    """Simulated time from the final heal until every node held and showed everything."""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.converged and not self.violations

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


NodeFactory = Callable[..., SimNode]


def _history_key(envelope: Envelope) -> tuple[bytes, bytes, int]:
    """History order (SPEC §4.5): timestamp, then device id, then sequence number."""
    return encode_timestamp(envelope.hlc), envelope.sender_device, envelope.seq


class World:
    """The clock, the nodes and the network between them (implements `sim_node.Network`)."""

    def __init__(self, config: SimConfig, node_factory: NodeFactory = SimNode) -> None:
        self.config = config
        self.rnd = random.Random(config.seed)
        self.now_ms = 1_700_000_000_000
        room = RoomId(hashlib.sha256(b"sim-room/%d" % config.seed).digest())
        self.nodes = [
            node_factory(
                i,
                keypair_from_seed(hashlib.sha256(b"sim/%d/%d" % (config.seed, i)).digest()),
                room,
                self,
                self.rnd.randbytes,
            )
            for i in range(config.nodes)
        ]
        self.by_user = {bytes(n.user): n for n in self.nodes}
        self.report = SimReport(seed=config.seed, steps=config.steps, nodes=config.nodes)
        self.loss = config.loss
        self.split: set[int] = set()
        """Nodes cut off from the rest (empty: no partition)."""
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._order = 0
        self._written: list[Envelope] = []
        self._acked: list[set[MessageId]] = [set() for _ in self.nodes]
        """Per node, the ids it acked STORED or DUPLICATE to some sender."""
        self._shown: list[int] = [0] * config.nodes
        """How much of each node's app log was checked."""
        self._seen: list[set[MessageId]] = [set() for _ in self.nodes]
        self._last: list[dict[tuple[bytes, bytes], int]] = [{} for _ in self.nodes]
        """Per node, the last number shown of each (room, device)."""

    # --- the network --------------------------------------------------------------------------

    def _at(self, delay_ms: int, action: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._events, (self.now_ms + delay_ms, self._order, action))

    def _linked(self, a: SimNode, b: SimNode) -> bool:
        return a.up and b.up and ((a.index in self.split) == (b.index in self.split))

    def _lost(self) -> bool:
        lost = self.rnd.random() < self.loss
        self.report.frames_lost += lost
        return lost

    def send(self, node: SimNode, destination: bytes, envelopes: list[Envelope]) -> None:
        target, epoch = self.by_user[destination], node.epoch
        self.report.frames_sent += 1

        def fail() -> None:
            if node.up and node.epoch == epoch:
                node.failed(destination, self.now_ms)

        def answer(results: list[DeliveryResult]) -> None:
            if node.up and node.epoch == epoch:
                node.answered(destination, results, self.now_ms)

        def arrive() -> None:
            if not self._linked(node, target):
                self._at(TIMEOUT_MS, fail)
                return
            results = target.receive(envelopes)
            self._check_shown(target)
            if self._lost():
                self._at(TIMEOUT_MS, fail)
            else:
                self._at(self._delay(), lambda: answer(results))

        if not self._linked(node, target) or self._lost():
            self._at(TIMEOUT_MS, fail)
        else:
            self._at(self._delay(), arrive)

    def _delay(self) -> int:
        return self.rnd.randint(1, self.config.max_delay_ms)

    def acked(self, node: SimNode, destination: bytes, ids: tuple[MessageId, ...]) -> None:
        target = self.by_user[destination]
        for mid in ids:
            self._acked[target.index].add(mid)
            self.report.acked += 1
            if mid not in target.stored:
                self.violation(f"{mid.hex()[:8]} acked by node {target.index}, not stored there")

    def violation(self, text: str) -> None:
        if len(self.report.violations) < 20:
            self.report.violations.append(f"t={self.now_ms - 1_700_000_000_000}ms {text}")

    # --- invariants -------------------------------------------------------------------------

    def _check_shown(self, node: SimNode) -> None:
        """What the app was shown since the last check: each message once, per sender in
        order from 1 (SPEC §8.2)."""
        seen, last = self._seen[node.index], self._last[node.index]
        for envelope in node.app[self._shown[node.index] :]:
            sender = (envelope.room, envelope.sender_device)
            if envelope.message_id in seen:
                self.violation(f"node {node.index} showed {envelope.message_id.hex()[:8]} twice")
            if envelope.seq != last.get(sender, 0) + 1:
                self.violation(
                    f"node {node.index} showed seq {envelope.seq} after {last.get(sender, 0)}"
                )
            seen.add(envelope.message_id)
            last[sender] = envelope.seq
        self._shown[node.index] = len(node.app)

    def _check_acked_kept(self, node: SimNode) -> None:
        """Nothing acked is ever lost: a restart finds what the store committed."""
        lost = self._acked[node.index] - node.stored.keys()
        for mid in sorted(lost)[:3]:
            self.violation(f"{mid.hex()[:8]} acked by node {node.index} and lost")

    def converged(self) -> bool:
        """Every node stores and has shown every message written, and owes nothing."""
        everything = {e.message_id for e in self._written}
        return all(
            n.up and not n.outbox and set(n.stored) == everything and len(n.app) == len(everything)
            for n in self.nodes
        )

    def digests(self) -> set[bytes]:
        """Each node's history digest (SPEC §21.9): one value once converged."""
        return {
            history_digest(e.message_id for e in sorted(n.stored.values(), key=_history_key))
            for n in self.nodes
        }

    # --- reconciliation ----------------------------------------------------------------------

    def sync(self, a: SimNode, b: SimNode) -> None:
        """Reconcile the stored histories of `a` and `b` (SPEC §21) with the real machines and
        hand each what it lacks, in history order (§23.4). What the exchange finds must be
        exactly the difference of the two sets."""
        machines = [
            Reconciler(SortedItems((e.hlc, e.message_id) for e in n.stored.values()))
            for n in (a, b)
        ]
        have: list[set[MessageId]] = [set(), set()]
        need: list[set[MessageId]] = [set(), set()]
        message: bytes | None = machines[0].initiate()
        turn = 1
        for _ in range(MAX_ROUNDS):
            if message is None:
                break
            step = machines[turn].reconcile(message)
            have[turn] |= set(step.have)
            need[turn] |= set(step.need)
            message, turn = step.reply, 1 - turn
        else:
            self.violation(f"reconciling nodes {a.index} and {b.index} took over {MAX_ROUNDS}")
            return
        self.report.syncs += 1
        for giver, taker, side in ((a, b, 0), (b, a, 1)):
            missing = set(giver.stored) - set(taker.stored)
            found = have[side] | need[1 - side]
            if found != missing:
                self.violation(
                    f"reconciliation found {len(found)} of node {giver.index}'s ids for node "
                    f"{taker.index}, which lacks {len(missing)}"
                )
            envelopes = sorted((giver.stored[i] for i in missing), key=_history_key)
            taker.receive(envelopes)
            self.report.synced += len(envelopes)
            self._check_shown(taker)

    # --- the script -------------------------------------------------------------------------

    def advance(self, delta_ms: int) -> None:
        """Move the clock, running every frame due on the way and each node's timers."""
        until = self.now_ms + delta_ms
        while self._events and self._events[0][0] <= until:
            at, _, action = heapq.heappop(self._events)
            self.now_ms = max(self.now_ms, at)
            action()
        self.now_ms = until
        for node in self.nodes:
            if node.up:
                node.tick(self.now_ms)
                self._check_shown(node)

    def step(self) -> None:
        """One scripted action, chosen by the seeded generator."""
        roll = self.rnd.random()
        up = [n for n in self.nodes if n.up]
        if roll < 0.45 and up:
            writer = self.rnd.choice(up)
            others = [bytes(n.user) for n in self.nodes if n is not writer]
            self._written.append(writer.write(others, self.now_ms))
            self.report.written += 1
            self._check_shown(writer)
        elif roll < 0.93:
            self.advance(self.rnd.randint(1, 800))
        elif roll < 0.96:
            a, b = self.rnd.sample(self.nodes, 2)
            if self._linked(a, b):
                self.sync(a, b)
        elif roll < 0.985 and self.config.restarts:
            node = self.rnd.choice(self.nodes)
            if node.up and len(up) > 1:
                node.crash()
                self.report.crashes += 1
            elif not node.up:
                node.restart(self.now_ms)
                self._check_acked_kept(node)
        elif self.config.partitions:
            if self.split:
                self.split = set()
            else:
                self.split = set(self.rnd.sample(range(len(self.nodes)), len(self.nodes) // 2))
                self.report.partitions += 1

    def settle(self) -> None:
        """Heal the mesh, restart every node, stop losing frames, and wait for convergence."""
        self.split, self.loss = set(), 0.0
        for node in self.nodes:
            if not node.up:
                node.restart(self.now_ms)
        healed_ms = self.now_ms
        for _ in range(SETTLE_STEPS):
            if self.converged():
                break
            for node in self.nodes:
                node.machine.home_connected([bytes(n.user) for n in self.nodes])
            self.advance(100)
        self.report.converged = self.converged() and len(self.digests()) == 1
        self.report.converge_ms = self.now_ms - healed_ms if self.report.converged else None
        for node in self.nodes:
            self._check_acked_kept(node)


def simulate(config: SimConfig, node_factory: NodeFactory = SimNode) -> SimReport:
    """Run one seeded simulation and return its report."""
    world = World(config, node_factory)
    for _ in range(config.steps):
        world.step()
    world.settle()
    return world.report
