"""The faults of a `hearthmesh simulate` run (SPEC §20.4): a seeded schedule of kill -9s, one
partition, and packet loss, as nftables rules in the nodes' network namespaces.

This kernel has no netem, so loss is an nftables `numgen random mod 100 < PCT drop` rule on
each node's outgoing interface (each direction of each link loses PCT %), and a partition drops
what a node sends to the other side's addresses.

State: `FaultLog`, the faults as they happened (seconds since the workload started).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hearthmesh.protocol.errors import HearthError

__all__ = [
    "Fault",
    "FaultLog",
    "Partition",
    "PartitionSpecError",
    "kill_times",
    "loss_rules",
    "parse_partition",
    "partition_rules",
]

LOSS_TABLE = "hmloss"
PARTITION_TABLE = "hmsplit"


class PartitionSpecError(HearthError):
    """A --partition value that does not parse."""


@dataclass(frozen=True, slots=True)
class Partition:
    """From `start_s` for `length_s`, the nodes in `side` and the others cannot reach each
    other."""

    start_s: float
    length_s: float
    side: frozenset[int]

    @property
    def heal_s(self) -> float:
        return self.start_s + self.length_s


def parse_partition(text: str, nodes: int) -> Partition:
    """`AT+LEN` (seconds; the first half of the nodes against the rest) or `AT+LEN:i,j,...`
    (those node indices against the rest)."""
    timing, colon, names = text.partition(":")
    start, plus, length = timing.partition("+")
    try:
        start_s, length_s = float(start), float(length)
        side = (
            frozenset(int(n) for n in names.split(","))
            if colon
            else frozenset(range((nodes + 1) // 2))
        )
    except ValueError:
        raise PartitionSpecError(f"--partition {text!r}: AT+LEN[:i,j,...] in seconds") from None
    if not plus or start_s < 0 or length_s <= 0:
        raise PartitionSpecError(f"--partition {text!r}: AT+LEN with LEN > 0")
    if not side or not side < frozenset(range(nodes)):
        raise PartitionSpecError(f"--partition {text!r}: one side names some, not all, nodes")
    return Partition(start_s, length_s, side)


def kill_times(seed: int, every_s: float, duration_s: float) -> list[float]:
    """When to kill -9 a node: gaps drawn uniformly from [2/3, 4/3] x `every_s` (30 gives the
    20-40 s of target R1), the first one gap in."""
    rng = random.Random(seed)
    times: list[float] = []
    at = 0.0
    while every_s > 0:
        at += rng.uniform(every_s * 2 / 3, every_s * 4 / 3)
        if at >= duration_s:
            break
        times.append(at)
    return times


def loss_rules(percent: float) -> str:
    """The nftables ruleset that drops `percent` % of what a namespace sends out of eth0."""
    return (
        f"table inet {LOSS_TABLE} {{\n  chain out {{\n"
        "    type filter hook output priority 0; policy accept;\n"
        f'    oifname "eth0" numgen random mod 100 < {round(percent)} drop\n  }}\n}}\n'
    )


def partition_rules(others: list[str]) -> str:
    """The ruleset that drops what a namespace sends to the addresses `others`."""
    return (
        f"table inet {PARTITION_TABLE} {{\n  chain out {{\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {{ {', '.join(others)} }} drop\n  }}\n}}\n"
    )


@dataclass(frozen=True, slots=True)
class Fault:
    at: float
    kind: str
    """kill, restarted, partition, heal, loss_on, loss_off, drain"""
    node: int | None = None


@dataclass
class FaultLog:
    faults: list[Fault] = field(default_factory=list)

    def note(self, at: float, kind: str, node: int | None = None) -> None:
        self.faults.append(Fault(at, kind, node))

    def times(self, kind: str) -> list[float]:
        return [f.at for f in self.faults if f.kind == kind]

    def down_s(self, node: int, start: float, end: float) -> float:
        """How long `node` was killed between `start` and `end` (s into the workload)."""
        down = 0.0
        killed_at: float | None = None
        for fault in self.faults:
            if fault.node != node:
                continue
            if fault.kind == "kill":
                killed_at = fault.at
            elif fault.kind == "restarted" and killed_at is not None:
                down += max(0.0, min(fault.at, end) - max(killed_at, start))
                killed_at = None
        if killed_at is not None:
            down += max(0.0, end - max(killed_at, start))
        return down

    def as_json(self) -> list[dict[str, object]]:
        return [
            {"at_s": round(f.at, 3), "kind": f.kind, **({} if f.node is None else {"node": f.node})}
            for f in self.faults
        ]
