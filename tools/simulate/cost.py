"""What node processes cost during a phase of `hearthmesh simulate --scale` (SPEC §20.6): CPU
time (user + system, not wall: 50 processes on 2 cores stretch wall time, not CPU time), TCP
bytes sent and received, and resident memory.

Bytes come from the kernel's per-socket counters (`ss -tinp`: `bytes_sent`, `bytes_received`
of each established TCP socket, by owning pid), sampled every few seconds: a socket's bytes in
a phase are its last sample less its count when the phase began (0 for a socket opened in the
phase). A socket that closes between two samples loses at most one interval's bytes. The
client API's sockets (the simulator's own HTTP and WebSocket) are left out: the cost is the
mesh's.

State: per phase, the CPU times at its start and each socket's first and last counts
(`PhaseMeter`).
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hearthmesh.tools.bench.stats import percentile, process_cpu_s, process_rss_mb

__all__ = ["NodeCost", "PhaseMeter", "parse_ss", "peers_of", "summarize"]

SAMPLE_S = 3.0
"""How often the socket counters are read during a phase."""

CPU_DIGITS = 3
"""Decimals of the CPU seconds reported (the rest: two)."""

_OWNER = re.compile(r"pid=(\d+),")
_BYTES = re.compile(r"\bbytes_(sent|received):(\d+)")

Socket = tuple[int, str, str]
"""(pid, local address, peer address)."""


def parse_ss(text: str, excluded_ports: frozenset[int] = frozenset()) -> dict[Socket, list[int]]:
    """[bytes sent, bytes received] of each socket in `ss -tinpH` output, by (pid, local,
    peer); sockets whose local port is in `excluded_ports` are left out."""
    counts: dict[Socket, list[int]] = {}
    current: list[Socket] = []
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            fields = line.split()
            current = []
            if len(fields) < 5:
                continue
            local, peer = fields[2], fields[3]
            if int(local.rpartition(":")[2]) in excluded_ports:
                continue
            current = [(int(pid), local, peer) for pid in _OWNER.findall(line)]
            continue
        found = dict(_BYTES.findall(line))
        for socket in current:
            counts[socket] = [int(found.get("sent", 0)), int(found.get("received", 0))]
    return counts


def peers_of(sockets: set[Socket]) -> dict[int, int]:
    """Per pid, the other pids among `sockets` that one of its sockets leads to (its peer
    address is their local one): a pair of processes counts once however many connections
    join them."""
    owner = {local: pid for pid, local, _ in sockets}
    reached: dict[int, set[int]] = {}
    for pid, _, peer in sockets:
        other = owner.get(peer)
        if other is not None and other != pid:
            reached.setdefault(pid, set()).add(other)
    return {pid: len(others) for pid, others in reached.items()}


async def _read_sockets(excluded_ports: frozenset[int]) -> dict[Socket, list[int]]:
    process = await asyncio.create_subprocess_exec(
        "ss",
        "-tinpH",
        "state",
        "established",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return parse_ss(out.decode(errors="replace"), excluded_ports)


@dataclass(frozen=True, slots=True)
class NodeCost:
    """One node's cost over one phase."""

    cpu_s: float
    sent_bytes: int
    received_bytes: int
    rss_mb: float
    connections: int
    """Its established TCP connections of the mesh at the phase's end."""
    peers: int = 0
    """The metered processes at the other end of those (`peers_of`): fewer than `connections`
    by the peers it holds two or more connections to, as when both ends dialled at once."""


@dataclass
class PhaseMeter:
    """Meters the node processes `pids` from `start()` to `stop()`."""

    pids: Sequence[int]
    excluded_ports: frozenset[int] = frozenset()
    _cpu: dict[int, float] = field(default_factory=dict)
    _first: dict[Socket, list[int]] = field(default_factory=dict)
    _last: dict[Socket, list[int]] = field(default_factory=dict)
    _open: set[Socket] = field(default_factory=set)
    _sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._cpu = {pid: process_cpu_s(pid) for pid in self.pids}
        self._first = await self._sample()
        self._sampler = asyncio.create_task(self._keep_sampling())

    async def stop(self) -> dict[int, NodeCost]:
        """Each pid's cost since `start()`."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        await self._sample()
        peers = peers_of(self._open)
        costs = {}
        for pid in self.pids:
            mine = [s for s in self._last if s[0] == pid]
            sent = sum(self._last[s][0] - self._first.get(s, [0, 0])[0] for s in mine)
            received = sum(self._last[s][1] - self._first.get(s, [0, 0])[1] for s in mine)
            costs[pid] = NodeCost(
                cpu_s=round(process_cpu_s(pid) - self._cpu[pid], 3),
                sent_bytes=sent,
                received_bytes=received,
                rss_mb=process_rss_mb(pid),
                connections=sum(1 for s in self._open if s[0] == pid),
                peers=peers.get(pid, 0),
            )
        return costs

    async def _sample(self) -> dict[Socket, list[int]]:
        counts = await _read_sockets(self.excluded_ports)
        ours = {s: c for s, c in counts.items() if s[0] in self._cpu}
        self._last.update(ours)
        self._open = set(ours)
        return ours

    async def _keep_sampling(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            await self._sample()


def _spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), digits),
        "p50": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def summarize(costs: Mapping[int, NodeCost], seconds: float) -> dict[str, object]:
    """Per node over the phase: CPU seconds and bytes (totals and per second of the phase),
    RSS at its end and connections; each as mean, p50 and max over the nodes."""
    values = list(costs.values())
    if not values:
        return {}
    per_s = max(seconds, 1e-9)
    return {
        "seconds": round(seconds, 1),
        # A node's CPU is read in clock ticks (10 ms); their mean over the nodes is finer, and a
        # cut of a few ms a node in a 30 s idle phase shows only in the third decimal.
        "cpu_s": _spread([c.cpu_s for c in values], CPU_DIGITS),
        "cpu_pct_of_a_core": _spread([100 * c.cpu_s / per_s for c in values]),
        "sent_kib": _spread([c.sent_bytes / 1024 for c in values]),
        "received_kib": _spread([c.received_bytes / 1024 for c in values]),
        "sent_kib_per_s": _spread([c.sent_bytes / 1024 / per_s for c in values]),
        "received_kib_per_s": _spread([c.received_bytes / 1024 / per_s for c in values]),
        "rss_mb": _spread([c.rss_mb for c in values]),
        "connections": _spread([float(c.connections) for c in values]),
        # a peer held by two connections or more (both ends dialled at once, SPEC §20.6)
        "connections_beyond_one_a_peer": _spread([float(c.connections - c.peers) for c in values]),
        "cpu_s_p99": round(percentile([c.cpu_s for c in values], 99), CPU_DIGITS),
    }
