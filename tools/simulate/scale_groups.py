"""The groups of a scale run (`simulate --scale`, SPEC §20.6): one group of every node, or,
with `--group-homes K`, disjoint groups of K homes each, so a node's own workload (the homes it
sends to and hears from, the messages a second) stays the same while the mesh grows.

A group of everyone makes every home a destination of every other: its connections and its
copies per message grow with N by design, and so does what a node's cost per second follows.
Groups of K hold that part fixed; what still grows with N is the mesh's own (the presence
topic, the DHT, the gossip heartbeat's peers). The checks, the convergence and the latency to
the last member are per group: each message's recipients are its group's other homes.

State: none; the groups are node indices, fixed for a size's run.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearthmesh.tools.simulate.checker import Acked, Seen, Verdict, check, missing_on
from hearthmesh.tools.simulate.run import _Run
from hearthmesh.tools.simulate.slow_paths import Message, messages_of
from hearthmesh.tools.simulate.workload import DeviceClient

__all__ = [
    "GroupsRefused",
    "group_homes",
    "group_rate",
    "groups_check",
    "groups_missing",
    "groups_shown",
]


class GroupsRefused(ValueError):
    """`--group-homes` that does not split a size into groups of at least 2 homes."""


def group_homes(size: int, homes: int) -> list[list[int]]:
    """The node indices of each group: all `size` nodes (`homes` 0), or `size / homes`
    groups of `homes` consecutive nodes, each node in exactly one."""
    if homes == 0:
        return [list(range(size))]
    if homes < 2 or size % homes:
        raise GroupsRefused(f"{size} nodes do not split into groups of {homes} homes")
    return [list(range(start, start + homes)) for start in range(0, size, homes)]


def group_rate(rate: float, size: int, homes: int) -> float:
    """The messages a second sent in all: `rate` for a group of everyone; `rate` in each
    group of `homes`, so a node sends `rate / homes` a second at every size."""
    return rate if homes == 0 else rate * size / homes


def _of(
    run: _Run, group: Sequence[int]
) -> tuple[list[DeviceClient], list[Acked], dict[int, list[Seen]]]:
    """A group's clients, their acked sends and what each showed."""
    clients = [run.clients[i] for i in group]
    acked = [a for c in clients for s in c.sends.values() if (a := s.acked()) is not None]
    return clients, acked, {c.node.index: c.seen for c in clients}


def groups_missing(run: _Run, groups: Sequence[Sequence[int]]) -> int:
    """(acked message, other home of its group) pairs not shown yet (0: converged)."""
    total = 0
    for group in groups:
        _, acked, seen = _of(run, group)
        total += missing_on(acked, seen)
    return total


def groups_shown(run: _Run, groups: Sequence[Sequence[int]]) -> list[Message]:
    """Each acked message that every other home of its group showed (`messages_of`)."""
    shown: list[Message] = []
    for group in groups:
        _, acked, seen = _of(run, group)
        shown += messages_of(acked, seen)
    return shown


def groups_check(run: _Run, groups: Sequence[Sequence[int]]) -> Verdict:
    """The checker's verdict per group, summed: each acked message on every other home of
    its group once, receipts after an ack."""
    users = [n.user for n in run.mesh.nodes]
    verdict = Verdict()
    for group in groups:
        clients, acked, seen = _of(run, group)
        one = check(
            acked,
            seen,
            {c.node.index: c.acks for c in clients},
            [r for c in clients for r in c.receipts],
            users,
        )
        verdict.expected += one.expected
        verdict.delivered += one.delivered
        for name in ("missing", "duplicates", "early_receipts", "feed_out_of_order", "latencies"):
            getattr(verdict, name).extend(getattr(one, name))
    return verdict
