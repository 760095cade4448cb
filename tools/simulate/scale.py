"""`hearthmesh simulate --scale 10,25,50`: what one node costs as the mesh grows, and the
latency to a group's last member (SPEC §20.6).

For each size N: N `hearthmesh run` processes on loopback, one user each (a node is one
user's home), dialled to each other (a group of everyone makes every home a destination of
every other, so the connections would be made by the first sends anyway), one WebSocket
client per node, and one group of the N users plus `members - N` users whose homes are absent
(their deliveries wait in the senders' outboxes, as for members who are offline: several
users per node do not exist). Then two phases, metered apart (`cost.PhaseMeter`):

- idle: the mesh and the group with nothing sent, for `idle` seconds (heartbeats, presence,
  home records, DHT);
- workload: random nodes send at `rate` messages a second in total for `duration` seconds,
  and the phase ends when every acked message is on every other real member's client (or
  `converge_timeout` after the last send).

The total rate is the same at every size, so a node's share of the sending stays put while
each message reaches more members: what a node receives grows with nothing but the messages,
and what it sends grows with its share times the members. A cost that stays flat per node is
the target of #18; `growth` is each metric at the largest size over the smallest.

State: none beyond one size's run (`run._Run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.protocol.membership import MAX_ADD_TARGETS
from hearthmesh.tools.bench.stats import percentile
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import hearthmesh_script
from hearthmesh.tools.simulate.cost import PhaseMeter, summarize
from hearthmesh.tools.simulate.faults import FaultLog
from hearthmesh.tools.simulate.idle_bytes import by_cause
from hearthmesh.tools.simulate.mesh import Mesh, SimNode, close_quietly
from hearthmesh.tools.simulate.plot import plot_latency
from hearthmesh.tools.simulate.run import (
    SimulateConfig,
    SimulationFailed,
    _Run,
    _send_loop,
    _wait_member,
)
from hearthmesh.tools.simulate.scale_groups import (
    group_homes,
    group_rate,
    groups_check,
    groups_missing,
    groups_shown,
)
from hearthmesh.tools.simulate.slow_paths import Message, slow_messages
from hearthmesh.tools.simulate.workload import DeviceClient

__all__ = ["IDLE_S", "ScaleConfig", "run_scale", "scale"]

_ADD_AT_ONCE = MAX_ADD_TARGETS
"""Members named by the create and by each later add: each call is one MEMBERSHIP event
(SPEC §12.1.1), so a group of 1,024 forms in 16 events, not 1,024 fanned out to every member."""
_DIALS = 3
_GROUP_CALL_S = 300.0
"""The bound of a create or add of 64 members: each commits an event, welcomes the members
and, on the create, shares the creator's profile (a room key for every member's device); at
25 nodes on 2 cores at load 50-60 that took more than the API client's 30 s, which ended the
run before the group had formed."""
_FORMED_POLL_S = 2.0
"""How often each node is asked whether it shows the whole group: each answer lists the
group's members, and 50 nodes asked every 0.2 s for 1,024 members kept the cores busy with the
tool's own questions while the group formed."""
_LAST_HOMES = 3
"""Homes named in the formation's report, the last to show the whole group."""

_NEIGHBOURS = 3

IDLE_S: Final = 300.0
"""The idle phase's default: what a node does with nothing sent comes in rounds, and a phase
shorter than a round holds all of one or none, by the mesh's age. The home records on the
presence topic go out in bursts (homes that started together republish together, every 300 s
at 50 nodes, §32.4.3: a 30 s idle held a burst at 25 nodes and none at 50), and an AutoNAT round
comes every 300 s; the periodic jobs are also taken out by their own count (`periodic`)."""


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    sizes: tuple[int, ...] = (10, 25, 50)
    members: int = 0
    """Group members; 0 or fewer than a size: the size's users only."""
    idle: float = IDLE_S
    duration: float = 60.0
    rate: float = 2.0
    converge_timeout: float = 120.0
    settle: float = 10.0
    """After the group: let the first heartbeats, presence and record rounds pass before the
    idle phase is metered."""
    seed: int = 0
    out: Path | None = None
    progress: bool = True
    bystanders: int = 0
    """Node processes beside each size's mesh, dialled to each other but not to it and never
    metered: a control for what more processes cost the machine (the run queue, caches,
    each one's idle work), apart from what a larger mesh costs the protocol."""
    node_log_level: str | None = None
    """What the nodes log in their `nodeN.log` (None: `hearthmesh run`'s default, warning)."""
    first_sends: bool = False
    """Each node sends one message into the group before the idle phase, metered as a phase of
    its own (`first_sends`) and then left out of the checks and the workload, so that no
    workload message is its sender's first. A sender's first message sets up what its later
    ones reuse (a session and a room key with each member home); at a fixed total rate a
    mesh twice as large has twice the senders whose first message falls in the workload
    (10, 23 and 42 of 90 messages at 10, 25 and 50 nodes), so without this the CPU a message
    mixes a per-pair setup into what a message costs (SPEC §20.6)."""
    group_homes: int = 0
    """0: one group of every node. K: disjoint groups of K homes (each with `members` members,
    at least K), each sent into at `rate`, so a node's own workload is the same at every size
    while the mesh grows (`scale_groups`)."""
    busy_bystanders: bool = False
    """The bystanders form a group of their own (`members` in all, as the mesh's) and send into
    it at `rate` while the mesh's workload sends: each then does what a node of a mesh of
    theirs plus the size does, so the machine is as loaded as by one mesh of both."""


def _mesh(config: ScaleConfig, root: Path, sockets: Path, count: int) -> Mesh:
    """`count` single-device nodes of this package in `root`, logging at the run's level."""
    level = () if config.node_log_level is None else ("--log-level", config.node_log_level)
    # All on loopback, yet each runs the AutoNAT rounds a home among many runs (SPEC §20.6).
    flags = ("--autonat-loopback", *level)
    nodes = [(i, 0) for i in range(count)]
    return Mesh(root, sockets, nodes, [hearthmesh_script()] * count, None, flags=flags)


def _say(config: ScaleConfig, text: str) -> None:
    if config.progress:
        print(f"[scale] {text}", file=sys.stderr, flush=True)


async def _connect(mesh: Mesh) -> int:
    """Node i dials the next `_NEIGHBOURS` nodes of the ring, all nodes at once: the records
    swapped in hello and on the presence topic tell every home where the others are, and the
    group's first deliveries connect the rest, as in a mesh nobody dialled by hand. A dial that
    fails (a loaded machine, a hello cut short) is tried `_DIALS` times, then left to the
    deliveries. Returns how many dials failed."""
    nodes = mesh.nodes
    undialled = 0

    async def dial(api: ApiClient, address: str) -> None:
        nonlocal undialled
        for attempt in range(_DIALS):
            try:
                await api.call("POST", "/v1/peers", {"address": address})
                return
            except (HearthError, TimeoutError):  # the API's bound: a dial and hello under load
                await asyncio.sleep(1.0 + attempt)
        undialled += 1

    async def dial_from(i: int) -> None:
        async with nodes[i].client() as api:
            for k in range(1, min(_NEIGHBOURS, len(nodes) - 1) + 1):
                await dial(api, nodes[(i + k) % len(nodes)].addr)

    await asyncio.gather(*(dial_from(i) for i in range(len(nodes))))
    return undialled


async def _groups(
    run: _Run, groups: list[list[int]], members: int, rng: random.Random
) -> dict[str, Any]:
    """Each group of `groups` (node indices) with its absent members, all formed at once;
    when each step ended, the last group's create and ADD and every home (`_formation`)."""
    formed = await asyncio.gather(*(_one_group(run, g, max(members, len(g)), rng) for g in groups))
    formed_at = {index: at for _, _, _, homes in formed for index, at in homes.items()}
    created_at = max(created for _, created, _, _ in formed)
    added_at = max(added for _, _, added, _ in formed)
    return _formation(run.setup["connected_s"], created_at, added_at, formed_at)


async def _one_group(
    run: _Run, homes: Sequence[int], members: int, rng: random.Random
) -> tuple[str, float, float, dict[int, float]]:
    """The group of the users of the nodes `homes` (by index) and `members - len(homes)`
    absent ones, created by the first; its id once each of its homes holds it whole, when the
    create and the last ADD were answered and when each home showed it; each home's client
    sends into it."""
    nodes = [run.mesh.nodes[i] for i in homes]
    creator = nodes[0]
    absent = [user_id_text(UserId(rng.randbytes(32))) for _ in range(max(0, members - len(nodes)))]
    others = [n.user_text for n in nodes[1:]] + absent
    group = await creator.call(
        "POST",
        "/v1/groups",
        {"name": "scale", "members": others[:_ADD_AT_ONCE]},
        timeout_s=_GROUP_CALL_S,
    )
    room = str(group["id"])
    created_at = run.now()
    for start in range(_ADD_AT_ONCE, len(others), _ADD_AT_ONCE):
        users = others[start : start + _ADD_AT_ONCE]
        await creator.call(
            "POST", f"/v1/groups/{room}/members", {"user_ids": users}, timeout_s=_GROUP_CALL_S
        )
    added_at = run.now()
    for index in homes:
        run.clients[index].room = room
    formed_at: dict[int, float] = {}

    async def formed(node: SimNode) -> None:
        await _wait_member(node, room, len(others) + 1, every_s=_FORMED_POLL_S)
        formed_at[node.index] = run.now()

    await asyncio.gather(*(formed(n) for n in nodes))
    return room, created_at, added_at, formed_at


def _formation(
    connected_at: float, created_at: float, added_at: float, formed_at: dict[int, float]
) -> dict[str, Any]:
    """Where the formation's time went, in seconds from the mesh connected: the creator's
    create call answered, its last ADD answered, and each home showing the whole group (the
    first, the median and the last; within `_FORMED_POLL_S`), and the last homes by node
    index: a home that lags is then found in its own log (`nodes/n<size>/node<index>.log`)."""
    formed = sorted(at - connected_at for at in formed_at.values())
    last = sorted(formed_at, key=lambda index: -formed_at[index])[:_LAST_HOMES]
    return {
        "created_s": round(created_at - connected_at, 1),
        "added_s": round(added_at - connected_at, 1),
        "homes_formed_s": {
            "first": round(formed[0], 1),
            "p50": round(statistics.median(formed), 1),
            "last": round(formed[-1], 1),
        },
        "last_homes_s": {str(i): round(formed_at[i] - connected_at, 1) for i in last},
    }


def _to_last_member(messages: list[Message]) -> list[tuple[float, float]]:
    """Per acked message that reached every other real member: (sent at, seconds until the
    last one had it)."""
    return [
        (m.acked.sent_at, max(0.0, max(m.shown_at.values()) - m.acked.sent_at)) for m in messages
    ]


def _last_member_latency(last: list[tuple[float, float]]) -> dict[str, float | int | None]:
    """p50 / p99 / max of `_to_last_member`'s latencies, and how many messages they cover."""
    return {**_latency([latency for _, latency in last]), "messages": len(last)}


def _by_window(latencies: list[tuple[float, float]], window_s: float) -> list[float]:
    """The median latency of the messages sent in each `window_s` of the workload: whether
    the mesh keeps up or falls behind as the run goes on."""
    windows: dict[int, list[float]] = {}
    for sent_at, latency in latencies:
        windows.setdefault(int(sent_at // window_s), []).append(latency)
    return [round(statistics.median(windows[w]), 2) for w in sorted(windows)]


def _latency(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p99_s": None, "max_s": None}
    return {
        "p50_s": round(statistics.median(values), 3),
        "p99_s": round(percentile(values, 99), 3),
        "max_s": round(max(values), 3),
    }


def _pids(mesh: Mesh) -> list[int]:
    return [n.process.process.pid for n in mesh.nodes if n.process is not None]


async def _metered(mesh: Mesh) -> PhaseMeter:
    meter = PhaseMeter(_pids(mesh), frozenset(n.api_port for n in mesh.nodes))
    await meter.start()
    return meter


async def _workload(
    run: _Run, config: ScaleConfig, groups: list[list[int]], rng: random.Random
) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Send, then wait until every acked message is on every other client; the phase's
    seconds, and each node's status before it, as the last message was sent and at its end."""
    nodes = run.mesh.nodes
    before = await _statuses(nodes)
    started = run.now()
    await _send_loop(run, rng)
    status = await _statuses(nodes)
    await _delivered(run, config, groups)
    seconds = run.now() - started
    return seconds, before, status, await _statuses(nodes)


async def _delivered(run: _Run, config: ScaleConfig, groups: list[list[int]]) -> None:
    """Until every acked message is on every other client of its group and every send is
    acked, or `converge_timeout` passed."""
    deadline = run.now() + config.converge_timeout
    sends = [s for c in run.clients for s in c.sends.values()]
    while groups_missing(run, groups) > 0 or any(
        s.acked_at is None for s in sends
    ):  # the last acks too
        if run.now() > deadline:
            break
        await asyncio.sleep(0.5)


FIRST_SEND_GAP_S: Final = 1.0
"""Between two nodes' first sends (`ScaleConfig.first_sends`): one at a time, as a workload
of about this rate sends them."""


async def _first_sends(run: _Run, config: ScaleConfig, groups: list[list[int]]) -> dict[str, Any]:
    """One message from each node in turn, until each is on every other client: the phase's
    cost per node (`summarize`), its wire per message, its periodic jobs and each message's
    time to its last member (a first send shares its session's key, SPEC §27.10.3)."""
    nodes = run.mesh.nodes
    meter = await _metered(run.mesh)
    before = await _statuses(nodes)
    started = run.now()
    sent = 0
    for n, client in enumerate(run.clients):
        sent += await client.send(-1 - n)  # below the workload's serials: client ids stay apart
        await asyncio.sleep(FIRST_SEND_GAP_S)
    await _delivered(run, config, groups)
    seconds = run.now() - started
    phase = summarize(await meter.stop(), seconds)
    after = await _statuses(nodes)
    acked = len(run.acked())
    shown = groups_shown(run, groups)
    last = _to_last_member(shown)
    phase.update(
        sent=sent,
        acked=acked,
        to_last_member=_last_member_latency(last),
        # as the workload's: a slow first send names its last member and its copy's path
        slow_messages=slow_messages(shown, after, _wall_at_start(run)),
        missing=groups_missing(run, groups),
        periodic=_periodic_between(before, after),
        wire=_wire_between(before, after, acked, "message"),
    )
    _say(config, f"{len(nodes)} nodes: first sends, {acked} acked in {seconds:.0f} s")
    return phase


def _wall_at_start(run: _Run) -> float:
    """The wall clock at the run's second 0 (what the nodes' notes of slow arrivals stamp)."""
    return time.time() - run.now()


def _forget_sends(run: _Run) -> None:
    """Drop the first sends from each client (`_first_sends`): the checks and the workload's
    figures are the workload's messages alone. Each sender's later messages still come in
    rising order after them, which is all the checker asks of a history."""
    for client in run.clients:
        client.sends.clear()
        client.seen.clear()
        client.acks.clear()
        client.receipts.clear()


def run_counters(statuses: list[dict[str, Any]]) -> dict[str, int]:
    """Over the run, summed over the nodes (their statuses at its end): rows a home deferred
    made due again once it stored a later batch (SPEC §11.5.1), and what learning peers'
    levels cost: caps streams asked, asks with no answer in time, sends that waited for a
    hello instead (SPEC §20.7.1)."""
    asks = [s.get("capability_asks", {}) for s in statuses]
    return {
        "deferred_due_again": sum(s.get("deferred_due_again", 0) for s in statuses),
        "capability_asks": sum(a.get("asked", 0) for a in asks),
        "capability_asks_unanswered": sum(a.get("unanswered", 0) for a in asks),
        "capability_hellos_awaited": sum(a.get("hellos", 0) for a in asks),
    }


async def _statuses(nodes: list[SimNode]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(n.call("GET", "/v1/node/status") for n in nodes)))


def _above_idle(
    work: dict[str, Any],
    idle: dict[str, Any],
    idle_s: float,
    messages: int,
    *,
    less_periodic: bool = False,
) -> float | None:
    """CPU milliseconds per message per node less what a node spends with nothing sent, at its
    idle rate over the workload's seconds. The phase lasts until the last member showed every
    message, longer as the mesh grows (and the more loaded the machine), and the heartbeats,
    keepalives and presence of those seconds are no message's cost (25 nodes at load 20-30:
    34.8 ms a message in all, 30.8 above idle). `less_periodic`: each phase's CPU less its
    periodic jobs' (`periodic`), which the phases meet at different ages of the mesh (an
    AutoNAT round every 300 s, a kad refresh every 600 s): a refresh in the workload and not in
    the idle phase, 0.26 CPU s a node at 50 nodes, moved it by 3 ms a message (SPEC §20.6)."""
    if not work or not idle or idle_s <= 0:
        return None
    idle_cpu, work_cpu = float(idle["cpu_s"]["mean"]), float(work["cpu_s"]["mean"])
    if less_periodic:
        if not idle.get("periodic") or not work.get("periodic"):
            return None  # nodes of a release that does not meter them
        idle_cpu -= float(idle["periodic"]["cpu_s"])
        work_cpu -= float(work["periodic"]["cpu_s"])
    above = work_cpu - idle_cpu / idle_s * float(work["seconds"])
    return round(1000 * above / max(1, messages), 2)


def _wire_pairs(
    before: list[dict[str, Any]], after: list[dict[str, Any]], key: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each node's status `wire[key]` at a phase's start and end, for the nodes whose release
    reports it at both."""
    return [
        (e["wire"][key], a["wire"][key])
        for e, a in zip(before, after, strict=True)
        if key in e["wire"] and key in a["wire"]
    ]


def _periodic_between(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """The periodic jobs a node ran between two status rounds (`wire.periodic`): per job, its
    runs and CPU seconds per node (mean), and their CPU in all (`cpu_s`); nothing from nodes of
    a release without them. What a phase holds of them depends on the mesh's age, not on its
    messages, so they are taken out of the CPU a message (`_above_idle`)."""
    pairs = _wire_pairs(before, after, "periodic")
    if not pairs:
        return {}
    jobs = {
        job: {
            key: round(statistics.fmean(a[job][key] - e[job][key] for e, a in pairs), 4)
            for key in ("runs", "cpu_s")
        }
        for job in pairs[0][1]
    }
    return {"cpu_s": round(sum(j["cpu_s"] for j in jobs.values()), 4), "jobs": jobs}


def _wire_between(
    before: list[dict[str, Any]], after: list[dict[str, Any]], per: float, unit: str
) -> dict[str, Any]:
    """What the nodes wrote to peers between two status rounds, per protocol (SPEC §20.6):
    payload bytes and writes per node per `unit` (`per` of them in the phase: its messages,
    or its seconds when idle), largest first, the streams opened per protocol (what the
    `negotiation` writes were for), and the gossip RPCs dropped for a full peer queue, summed
    over the nodes. What the TCP counters cannot say: which protocol a node's
    bytes grow by as the mesh grows."""
    share = max(1, len(after)) * max(per, 1e-9)
    sums: dict[str, list[int]] = {}
    for earlier, later in zip(before, after, strict=True):
        for protocol, size in later["wire"]["bytes"].items():
            total = sums.setdefault(protocol, [0, 0])
            total[0] += size - earlier["wire"]["bytes"].get(protocol, 0)
            total[1] += later["wire"]["writes"][protocol]
            total[1] -= earlier["wire"]["writes"].get(protocol, 0)
    by_bytes = sorted(sums.items(), key=lambda item: -item[1][0])
    opens: dict[str, int] = {}
    for earlier, later in zip(before, after, strict=True):
        for protocol, count in later["wire"]["opens"].items():
            opens[protocol] = opens.get(protocol, 0) + count
            opens[protocol] -= earlier["wire"]["opens"].get(protocol, 0)
    return {
        **_gossip_between(before, after, share, unit),
        f"bytes_per_node_per_{unit}": {p: round(b / share) for p, (b, _) in by_bytes},
        f"writes_per_node_per_{unit}": {p: round(w / share, 3) for p, (_, w) in by_bytes},
        f"opens_per_node_per_{unit}": {
            p: round(n / share, 2) for p, n in sorted(opens.items(), key=lambda item: -item[1])
        },
        "gossip_rpcs_dropped": sum(
            later["wire"]["gossip_rpcs_dropped"] - earlier["wire"]["gossip_rpcs_dropped"]
            for earlier, later in zip(before, after, strict=True)
        ),
    }


_GOSSIP_COUNTS = ("ids_offered", "ids_wanted", "grafts_sent", "prunes_sent")
"""The gossip router's counts (status `wire.gossip`, `MeshCounts`) a phase reports per node."""


def _gossip_between(
    before: list[dict[str, Any]], after: list[dict[str, Any]], share: float, unit: str
) -> dict[str, Any]:
    """The gossip router's counts over a phase (`_wire_between`): ids offered in IHAVEs and
    asked by IWANT, GRAFTs and PRUNEs sent, per node per `unit`, and a topic's mean mesh over
    the phase's heartbeats (what a node's copies per message follow); nothing from nodes of a
    release without them."""
    pairs = _wire_pairs(before, after, "gossip")
    if not pairs:
        return {}

    def summed(key: str) -> int:
        return sum(int(a[key]) - int(e[key]) for e, a in pairs)

    share = share * len(pairs) / max(1, len(after))
    return {
        f"gossip_per_node_per_{unit}": {
            key: round(summed(key) / share, 2) for key in _GOSSIP_COUNTS
        },
        "gossip_mesh_mean": round(summed("mesh_peers_seen") / max(1, summed("meshes_seen")), 2),
        **_gossip_by_topic(pairs, share, unit),
    }


def _gossip_by_topic(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]], share: float, unit: str
) -> dict[str, Any]:
    """The IHAVEs by kind of topic (room, presence; `MeshCounts.topics`): per node per `unit`
    the messages cached, the IHAVEs and ids offered, and per heartbeat that gossiped the kind,
    the peers of its topic outside the mesh; and the RPCs that carried IHAVEs (a heartbeat
    packs a peer's IHAVEs of every topic into one), what the `ihave` writes count. Whether
    IHAVE writes a message grow with the mesh by a topic whose traffic grows with it, or by
    the room's own (SPEC §20.6)."""
    pairs = [(e, a) for e, a in pairs if "topics" in e and "topics" in a]
    if not pairs:
        return {}
    by_topic: dict[str, dict[str, float]] = {}
    for kind in pairs[0][1]["topics"]:

        def summed(key: str, kind: str = kind) -> int:
            return sum(int(a["topics"][kind][key]) - int(e["topics"][kind][key]) for e, a in pairs)

        heartbeats = summed("heartbeats")
        by_topic[kind] = {
            **{k: round(summed(k) / share, 3) for k in ("messages", "ihaves", "ids_offered")},
            "outside_mesh_mean": round(summed("outside_mesh") / max(1, heartbeats), 2),
        }
        if all("meshes" in status["topics"][kind] for pair in pairs for status in pair):
            by_topic[kind]["mesh_mean"] = round(summed("mesh_peers") / max(1, summed("meshes")), 2)
    ihave_rpcs = sum(int(a["ihave_peers"]) - int(e["ihave_peers"]) for e, a in pairs)
    return {
        f"gossip_by_topic_per_node_per_{unit}": by_topic,
        f"ihave_rpcs_per_node_per_{unit}": round(ihave_rpcs / share, 2),
    }


def _closed_between(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, int]:
    """Connections closed between two status rounds, summed over the nodes per reason: each
    close counts on both ends (ours on one, `peer_or_transport` on the other)."""
    closed: dict[str, int] = {}
    for earlier, later in zip(before, after, strict=True):
        for reason, count in later["connections_closed"].items():
            more = count - earlier["connections_closed"].get(reason, 0)
            if more:
                closed[reason] = closed.get(reason, 0) + more
    return dict(sorted(closed.items()))


def _connection_census(
    statuses: list[dict[str, Any]], since: list[dict[str, Any]] | None = None
) -> dict[str, float]:
    """The connections a node opened since its start (status `wire.connections`), or since the
    status round `since`, a mean per node: `outbound`/`inbound` in all, and under the first
    protocol the dialler opened on one (`outbound /ipfs/kad/1.0.0`); the rest, `outbound none`
    and `inbound none`, opened no stream of any other protocol than gossip's, identify or ping
    (SPEC §20.6)."""
    total: dict[str, int] = {}
    for status in statuses:
        for key, count in status["wire"].get("connections", {}).items():
            total[key] = total.get(key, 0) + count
    for status in since or ():
        for key, count in status["wire"].get("connections", {}).items():
            total[key] = total.get(key, 0) - count
    for direction in ("outbound", "inbound"):
        named = sum(n for key, n in total.items() if key.startswith(f"{direction} "))
        total[f"{direction} none"] = total.get(direction, 0) - named
    share = max(1, len(statuses))
    return {key: round(n / share, 2) for key, n in sorted(total.items(), key=lambda kv: -kv[1])}


class _Crowd:
    """The bystanders of one size (`_bystanders`): busy ones send while the mesh's workload
    does (`sending`), from the same start and for as long."""

    def __init__(self, run: _Run | None, config: ScaleConfig) -> None:
        self._run = run
        self._rng = random.Random(config.seed + 1)
        self.report: dict[str, Any] = {"count": config.bystanders, "busy": run is not None}

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        run = self._run
        if run is None:
            yield
            return
        run.start = time.monotonic()
        for client in run.clients:
            client.start = run.start
        task = asyncio.create_task(_send_loop(run, self._rng))
        try:
            yield
        finally:  # the mesh's workload ended: its sends ended at the same time as these
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.report["sent"] = run.serial
            self.report["acked"] = len(run.acked())
            self.report["missing"] = run.missing()


@contextlib.asynccontextmanager
async def _bystanders(config: ScaleConfig, root: Path, sockets: Path) -> AsyncIterator[_Crowd]:
    """`config.bystanders` nodes for the span of one size: started and dialled in a ring of
    their own before the measured mesh picks its ports (theirs are then taken), never
    metered; when busy, with a client each and a group of their own, formed before the mesh
    starts."""
    count = config.bystanders
    if count == 0:
        yield _Crowd(None, config)
        return
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    mesh = _mesh(config, root, sockets, count)
    sim = SimulateConfig(nodes=count, duration=config.duration, rate=config.rate, progress=False)
    run = _Run(sim, mesh)
    try:
        async with asyncio.timeout(300 + (30 if config.busy_bystanders else 10) * count):
            await mesh.start()
            await _connect(mesh)
            run.setup["connected_s"] = run.now()
            if config.busy_bystanders:
                users = {n.user_text: n.user for n in mesh.nodes}
                run.clients = [DeviceClient(n, "", run.start, users) for n in mesh.nodes]
                run.readers = [asyncio.create_task(c.run()) for c in run.clients]
                await asyncio.gather(*(c.wait_connected() for c in run.clients))
                await _groups(
                    run, group_homes(count, 0), config.members, random.Random(config.seed + 1)
                )
        yield _Crowd(run if config.busy_bystanders else None, config)
    finally:
        for task in run.readers:
            task.cancel()
        await asyncio.gather(*run.readers, return_exceptions=True)
        await close_quietly(mesh)


async def _one_size(
    size: int, config: ScaleConfig, root: Path, sockets: Path, crowd: _Crowd
) -> dict[str, Any]:
    (root / f"n{size}").mkdir(parents=True, exist_ok=True)
    mesh = _mesh(config, root / f"n{size}", sockets, size)
    groups = group_homes(size, config.group_homes)
    rate = group_rate(config.rate, size, config.group_homes)
    sim = SimulateConfig(
        nodes=size,
        duration=config.duration,
        rate=rate,
        seed=config.seed,
        converge_timeout=config.converge_timeout,
        progress=False,
    )
    run = _Run(sim, mesh)
    rng = random.Random(config.seed)
    members = max(config.members, len(groups[0]))
    try:
        try:
            async with asyncio.timeout(300 + 30 * size):  # minutes on a loaded machine
                await mesh.start()
                run.setup["started_s"] = run.now()
                _say(config, f"{size} nodes started in {run.now():.0f} s")
                undialled = await _connect(mesh)
                run.setup["connected_s"] = run.now()
                users = {n.user_text: n.user for n in mesh.nodes}
                run.clients = [DeviceClient(n, "", run.start, users) for n in mesh.nodes]
                run.readers = [asyncio.create_task(c.run()) for c in run.clients]
                await asyncio.gather(*(c.wait_connected() for c in run.clients))
                formation = await _groups(run, groups, members, rng)
                run.setup["group_s"] = run.now()
                _say(config, f"{size} nodes: group of {members} after {run.now():.0f} s")
        except TimeoutError:
            raise SimulationFailed(f"{size} nodes were not set up in time: {run.setup}") from None
        first = await _first_sends(run, config, groups) if config.first_sends else None
        await asyncio.sleep(config.settle)
        if first is not None:
            _forget_sends(run)
        meter = await _metered(mesh)
        idle_from = await _statuses(mesh.nodes)
        await asyncio.sleep(config.idle)
        idle = summarize(await meter.stop(), config.idle)
        idle_to = await _statuses(mesh.nodes)
        idle["wire"] = _wire_between(idle_from, idle_to, config.idle, "s")
        idle["bytes_by_cause"] = by_cause(idle)
        idle["periodic"] = _periodic_between(idle_from, idle_to)
        idle["connections_closed"] = _closed_between(idle_from, idle_to)
        idle["connections_opened"] = _connection_census(idle_to)
        idle["connections_opened_in_phase"] = _connection_census(idle_to, idle_from)
        _say(config, f"{size} nodes: idle metered; workload {config.duration:g} s")
        if first is not None:
            first["cpu_ms_per_message_per_node_above_idle_less_periodic"] = _above_idle(
                first, idle, config.idle, first["acked"], less_periodic=True
            )
        run.start = time.monotonic()
        for client in run.clients:
            client.start = run.start
        meter = await _metered(mesh)
        async with crowd.sending():
            seconds, before, status, after = await _workload(run, config, groups, rng)
        work_costs = await meter.stop()
        work = summarize(work_costs, seconds)
        work["periodic"] = _periodic_between(before, after)
        acked = run.acked()
        verdict = groups_check(run, groups)
        cpu = [c.cpu_s for c in work_costs.values()]
        shown = groups_shown(run, groups)
        last = _to_last_member(shown)
        if config.out is not None:
            setting = f"({size} nodes, {members} members, {config.rate:g}/s)"
            png = config.out / f"latency-{size}.png"
            plot_latency(png, verdict.latencies, FaultLog(), setting=setting)
        _say(config, f"{size} nodes: done, {len(acked)} acked, {verdict.delivered} delivered")
        return {
            "nodes": size,
            "members": members,
            "absent_members": members - len(groups[0]),
            "groups": len(groups),
            "rate_per_s": rate,
            "failed_dials": undialled,
            "setup_s": {step: round(at, 1) for step, at in run.setup.items()},
            # from the mesh connected until every real member's client showed the whole group
            "formation_s": round(run.setup["group_s"] - run.setup["connected_s"], 1),
            "bystanders": crowd.report,
            "formation": formation,
            "counters": run_counters(after),
            **({} if first is None else {"first_sends": first}),
            "idle": idle,
            "workload": {
                **work,
                "sent": run.serial,
                "acked": len(acked),
                "expected": verdict.expected,
                "delivered": verdict.delivered,
                "missing": len(verdict.missing),
                "duplicates": len(verdict.duplicates),
                "cpu_ms_per_message_per_node": round(
                    1000 * statistics.fmean(cpu) / max(1, len(acked)), 2
                ),
                "cpu_ms_per_message_per_node_above_idle": _above_idle(
                    work, idle, config.idle, len(acked)
                ),
                "cpu_ms_per_message_per_node_above_idle_less_periodic": _above_idle(
                    work, idle, config.idle, len(acked), less_periodic=True
                ),
                "to_last_member": _last_member_latency(last),
                "to_last_member_p50_by_10s": _by_window(last, 10.0),
                # each slow message's last member and the path its copy took (SPEC §20.6)
                "slow_messages": slow_messages(shown, after, _wall_at_start(run)),
                # held for want of a room key (SPEC §27.13), and members a home could not reach,
                # summed over the nodes as the last message was sent: what a slow member waits on
                "undecryptable": sum(int(s["undecryptable"]) for s in status),
                "unreachable_users": sum(len(s["unreachable"]["users"]) for s in status),
                "connections_closed": _closed_between(before, after),
                "wire": _wire_between(before, after, len(acked), "message"),
                # DHT walks for home records (SPEC §13.5) as the last message was sent, summed
                "home_lookups": sum(int(s["home_lookups"]) for s in status),
                "to_each_member": _latency([lat for _, lat in verdict.latencies]),
            },
        }
    finally:
        for task in run.readers:
            task.cancel()
        await asyncio.gather(*run.readers, return_exceptions=True)
        await close_quietly(mesh)


_GROWTH = (
    ("idle", "cpu_s"),
    ("idle", "sent_kib"),
    ("idle", "received_kib"),
    ("idle", "rss_mb"),
    ("workload", "cpu_s"),
    ("workload", "sent_kib"),
    ("workload", "received_kib"),
    ("workload", "rss_mb"),
)


def _growth(sizes: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each per-node mean at the largest size over the smallest (1.0: flat)."""
    if len(sizes) < 2:
        return {}
    small, large = sizes[0], sizes[-1]
    growth: dict[str, float | None] = {}
    for phase, metric in _GROWTH:
        low, high = small[phase][metric]["mean"], large[phase][metric]["mean"]
        growth[f"{phase}.{metric}"] = round(high / low, 2) if low else None
    return growth


async def run_scale(config: ScaleConfig) -> dict[str, Any]:
    """Every size in turn; one JSON report."""
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="hearthmesh-scale-") as scratch,
        tempfile.TemporaryDirectory(prefix="hmsc", dir="/tmp") as sockets,
    ):
        root = Path(scratch) if config.out is None else config.out / "nodes"
        root.mkdir(parents=True, exist_ok=True)
        for size in config.sizes:
            async with _bystanders(config, root / f"n{size}-by", Path(sockets)) as crowd:
                if config.bystanders:
                    _say(config, f"{config.bystanders} bystanders up")
                results.append(await _one_size(size, config, root, Path(sockets), crowd))
            if config.out is not None:  # a later, larger size may not finish on a busy machine
                (config.out / f"scale-{size}.json").write_text(json.dumps(results[-1]))
    report: dict[str, Any] = {
        "config": {
            "sizes": list(config.sizes),
            "members": config.members,
            "idle_s": config.idle,
            "duration_s": config.duration,
            "rate_per_s": config.rate,
            "seed": config.seed,
            "bystanders": config.bystanders,
            "busy_bystanders": config.busy_bystanders,
            "group_homes": config.group_homes,
            "first_sends": config.first_sends,
            "cpus": os.cpu_count(),
        },
        "sizes": results,
        "growth": _growth(results),
    }
    if config.out is not None:
        from hearthmesh.tools.simulate.plot import plot_scale

        config.out.mkdir(parents=True, exist_ok=True)
        report["plot"] = str(plot_scale(config.out / "scale.png", results))
    report["ok"] = all(
        r["workload"]["missing"] == 0 and r["workload"]["duplicates"] == 0 for r in results
    )
    return report


def scale(config: ScaleConfig) -> dict[str, Any]:
    """`run_scale` in a new event loop (the CLI)."""
    return asyncio.run(run_scale(config))
