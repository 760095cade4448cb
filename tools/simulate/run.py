"""`hearthmesh simulate`: real node processes, a chat workload, faults and the invariants
(SPEC §20.4).

The run: start the nodes (in network namespaces when loss or a partition asks for them), dial
each from each, connect one client per device, create one group of every user, then send at
`rate` messages a second from random devices while the faults play, for `duration` seconds or
`messages` messages. Then the drain: loss off, the partition healed, every node up; the run
converged when every acked message is on every other device, `converge_s` after that heal.

State: the run's clock, clients and fault log (`_Run`).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.bench.stats import percentile
from hearthmesh.tools.netlab import NetLab, netlab_unavailable
from hearthmesh.tools.node_process import hearthmesh_script
from hearthmesh.tools.simulate.checker import Acked, Seen, check, missing_on
from hearthmesh.tools.simulate.delay_proxy import Latency
from hearthmesh.tools.simulate.faults import (
    LOSS_TABLE,
    PARTITION_TABLE,
    FaultLog,
    Partition,
    kill_times,
    loss_rules,
    partition_rules,
)
from hearthmesh.tools.simulate.mesh import Mesh, SimNode, close_quietly
from hearthmesh.tools.simulate.workload import DeviceClient

__all__ = ["SimulateConfig", "SimulationFailed", "run_simulation", "simulate"]


_SETUP_S = 600
"""Starting, linking, dialling and the group: minutes on a loaded machine, never forever."""


class SimulationFailed(HearthError):
    """The mesh could not be set up (a node did not start, the namespaces are not usable)."""


@dataclass(frozen=True, kw_only=True)
class SimulateConfig:
    nodes: int = 3
    users: int | None = None
    """Users that chat; default: one per node (with `devices` 1)."""
    devices: int = 1
    """Devices (home nodes) per chatting user; nodes beyond users x devices only relay."""
    loss: float = 0.0
    """Percent of packets each node drops on the way out (needs namespaces)."""
    latency: Latency | None = None
    """One-way delay per hop: a delay proxy in front of each node (SPEC §20.4)."""
    kill_every: float = 0.0
    """Seconds between kill -9s (drawn from 2/3 to 4/3 of it); 0: none."""
    down_s: float = 3.0
    """How long a killed node stays down before it is restarted."""
    partition: Partition | None = None
    duration: float = 60.0
    messages: int | None = None
    """Stop sending after this many (default: rate x duration)."""
    rate: float = 5.0
    """Messages a second over the whole mesh."""
    converge_timeout: float = 120.0
    seed: int = 0
    out: Path | None = None
    upgrade: Path | None = None
    """Another venv: every other node runs its `hearthmesh` (an upgrade test)."""
    progress: bool = True
    node_log_level: str | None = None
    """What the nodes log in their `nodeN.log` (None: `hearthmesh run`'s default, warning)."""

    @property
    def node_flags(self) -> tuple[str, ...]:
        return () if self.node_log_level is None else ("--log-level", self.node_log_level)

    @property
    def chatting_users(self) -> int:
        return self.users if self.users is not None else self.nodes // self.devices

    @property
    def needs_namespaces(self) -> bool:
        return self.loss > 0 or self.partition is not None


@dataclass
class _Run:
    config: SimulateConfig
    mesh: Mesh
    start: float = field(default_factory=time.monotonic)
    clients: list[DeviceClient] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    over: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the workload ended."""
    setup: dict[str, float] = field(default_factory=dict)
    """When each setup step ended (s since start)."""
    log: FaultLog = field(default_factory=FaultLog)
    serial: int = 0
    unsent: int = 0

    def now(self) -> float:
        return time.monotonic() - self.start

    def acked(self) -> list[Acked]:
        return [a for c in self.clients for s in c.sends.values() if (a := s.acked()) is not None]

    def missing(self) -> int:
        return missing_on(self.acked(), {c.node.index: c.seen for c in self.clients})

    def converged(self) -> bool:
        """Every acked message is on every other device, and no send awaits its answer: one
        acked later may not be on the devices yet, and judging their histories before it got
        there reported it `history_missing` though the feeds showed it a moment later."""
        return self.missing() == 0 and not any(c.in_flight() for c in self.clients)


def _plan(config: SimulateConfig) -> list[tuple[int, int]]:
    """(user, device) per node: the chatting users' devices, then one user per relay node."""
    users, devices = config.chatting_users, config.devices
    if users < 1 or devices < 1 or users * devices > config.nodes:
        raise SimulationFailed(
            f"{users} users x {devices} devices do not fit in {config.nodes} nodes"
        )
    if users < 2:
        raise SimulationFailed("at least 2 users chat (--users)")
    chatting = [(u, d) for u in range(users) for d in range(devices)]
    return chatting + [(users + i, 0) for i in range(config.nodes - len(chatting))]


def _scripts(config: SimulateConfig) -> list[str]:
    ours = hearthmesh_script()
    if config.upgrade is None:
        return [ours] * config.nodes
    old = hearthmesh_script(config.upgrade / "bin")
    if not Path(old).exists():
        raise SimulationFailed(f"--upgrade {config.upgrade}: no bin/hearthmesh there")
    return [old if i % 2 else ours for i in range(config.nodes)]


async def _set_up(run: _Run) -> str:
    """Start, connect, open the clients and the group; returns the room id."""
    mesh = run.mesh
    await mesh.start()
    run.setup["started_s"] = run.now()
    await mesh.connect_all()
    run.setup["connected_s"] = run.now()
    users = {n.user_text: n.user for n in mesh.nodes}
    chatting = [n for n in mesh.nodes if n.user < run.config.chatting_users]
    creator = chatting[0]
    members = sorted({n.user_text for n in chatting if n.user != creator.user})
    # Clients connect before the group exists: a first connection replays nothing (SPEC §15.4.3).
    run.clients = [DeviceClient(n, "", run.start, users) for n in chatting]
    run.readers = [asyncio.create_task(c.run()) for c in run.clients]
    await asyncio.gather(*(c.wait_connected() for c in run.clients))
    group = await creator.call("POST", "/v1/groups", {"name": "simulate", "members": members})
    for client in run.clients:
        client.room = group["id"]
    await asyncio.gather(*(_wait_member(n, group["id"], len(members) + 1) for n in chatting))
    run.setup["group_s"] = run.now()
    return str(group["id"])


async def _wait_member(node: SimNode, room: str, size: int, *, every_s: float = 0.2) -> None:
    while True:
        groups = (await node.call("GET", "/v1/groups"))["groups"]
        if any(g["id"] == room and len(g.get("members", [])) >= size for g in groups):
            return
        await asyncio.sleep(every_s)


async def _send_loop(run: _Run, rng: random.Random) -> None:
    config = run.config
    total = config.messages if config.messages is not None else int(config.rate * config.duration)
    next_at = run.now()
    while run.serial < total and run.now() < config.duration:
        next_at += 1 / config.rate
        await asyncio.sleep(max(0.0, next_at - run.now()))
        client = rng.choice(run.clients)
        if await client.send(run.serial):
            run.serial += 1
        else:
            run.unsent += 1


async def _until(run: _Run, at: float) -> bool:
    """Sleep until `at` (s into the workload); False when the workload ended first."""
    if run.over.is_set():  # wait_for with a timeout already past would not look
        return False
    try:
        await asyncio.wait_for(run.over.wait(), timeout=max(0.0, at - run.now()))
    except TimeoutError:
        return True
    return False


async def _kills(run: _Run, rng: random.Random) -> None:
    """kill -9 a random live node at each kill time, restart it `down_s` later (at once when
    the workload ends meanwhile: a restart is never cut short)."""
    config = run.config
    for at in kill_times(config.seed, config.kill_every, config.duration):
        if not await _until(run, at):
            return
        live = [n for n in run.mesh.nodes if n.up]
        if not live:
            continue
        victim = rng.choice(live)
        await run.mesh.kill(victim)
        run.log.note(run.now(), "kill", victim.index)
        await _until(run, run.now() + config.down_s)
        await run.mesh.restart(victim)
        run.log.note(run.now(), "restarted", victim.index)


def _set_loss(run: _Run, on: bool) -> None:
    lab = run.mesh.netlab
    if lab is None or run.config.loss <= 0:
        return
    for node in run.mesh.nodes:
        if node.ns is not None:
            rules = loss_rules(run.config.loss) if on else f"delete table inet {LOSS_TABLE}\n"
            lab.nft(node.ns, rules)
    run.log.note(run.now(), "loss_on" if on else "loss_off")


def _split(run: _Run, partition: Partition, on: bool) -> None:
    lab = run.mesh.netlab
    if lab is None:
        return
    for node in run.mesh.nodes:
        if node.ns is None:
            continue
        if not on:
            lab.nft(node.ns, f"delete table inet {PARTITION_TABLE}\n")
            continue
        mine = node.index in partition.side
        others = [n.host for n in run.mesh.nodes if (n.index in partition.side) != mine]
        lab.nft(node.ns, partition_rules(others))
    run.log.note(run.now(), "partition" if on else "heal")


async def _partition(run: _Run) -> None:
    """Split the mesh at its start, heal it at its end or when the workload ends."""
    partition = run.config.partition
    if partition is None or not await _until(run, partition.start_s):
        return
    _split(run, partition, True)
    try:
        await _until(run, partition.heal_s)
    finally:
        _split(run, partition, False)


async def _progress(run: _Run) -> None:
    """A progress bar on stderr (a line every 10 s when stderr is not a terminal)."""
    tty = sys.stderr.isatty()
    width = 30
    while True:
        await asyncio.sleep(1.0 if tty else 10.0)
        done = min(1.0, run.now() / max(run.config.duration, 1e-9))
        bar = "#" * int(done * width) + "." * (width - int(done * width))
        down = sum(1 for n in run.mesh.nodes if not n.up)
        line = (
            f"[{bar}] {run.now():6.1f}s sent {run.serial} acked {len(run.acked())} "
            f"missing {run.missing()} down {down}"
        )
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)


async def _drain(run: _Run) -> float | None:
    """Heal everything, restart every node; seconds until converged (None: timed out)."""
    for node in run.mesh.nodes:
        if not node.up:
            await run.mesh.restart(node)
            run.log.note(run.now(), "restarted", node.index)
    healed = run.now()
    run.log.note(healed, "drain")
    deadline = healed + run.config.converge_timeout
    while not run.converged():
        if run.now() > deadline:
            return None
        await asyncio.sleep(0.25)
    return run.now() - healed


async def _history(node: SimNode, room: str) -> list[Seen]:
    """The room's messages in the device's history order (SPEC §4.5), read page by page."""
    pages: list[list[Seen]] = []
    cursor: str | None = None
    async with node.client() as api:
        while True:
            params = {"limit": "100", **({} if cursor is None else {"cursor": cursor})}
            page = await api.call("GET", f"/v1/conversation/{room}/details", params=params)
            pages.append(
                [Seen(m["message_id"], m["sender_device"], m["seq"], 0.0) for m in page["messages"]]
            )
            cursor = page["next_cursor"]
            if cursor is None:
                break
    return [seen for page in reversed(pages) for seen in page]  # newest page first


async def _digests(run: _Run, room: str) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """Each device's history digest of the room (SPEC §21.9) and how many events it covers,
    grouped by user."""
    digests: dict[str, list[str]] = {}
    events: dict[str, list[int]] = {}
    for client in run.clients:
        node = client.node
        answer = await node.call("GET", f"/v1/conversation/{room}/digest")
        digests.setdefault(f"user{node.user}", []).append(answer["digest"])
        events.setdefault(f"user{node.user}", []).append(answer["events"])
    return digests, events


def _siblings_equal(digests: dict[str, list[str]]) -> bool:
    """Every user's devices hold the same history (SPEC §21.9)."""
    return all(len(set(d)) == 1 for d in digests.values())


@dataclass(frozen=True, slots=True)
class _Late:
    """One (message, device) pair acked before the heal, and when it arrived."""

    message_id: str
    sender: int
    device: int
    sent_s: float
    acked_s: float
    arrived_s: float
    down_s: float
    """How long the device's node lay killed between the heal and the arrival."""

    def as_json(self) -> dict[str, object]:
        return {
            "message_id": self.message_id[:16],
            "from_node": self.sender,
            "to_node": self.device,
            "sent_s": round(self.sent_s, 2),
            "acked_s": round(self.acked_s, 2),
            "arrived_s": round(self.arrived_s, 2),
            "down_s": round(self.down_s, 2),
        }


_LATEST: Final = 5
"""The latest (message, device) arrivals after a heal named in the report: what to look for
in the nodes' logs."""


def _first_shown(run: _Run) -> dict[int, dict[str, float]]:
    """When each device's client was first shown each message (s into the workload)."""
    return {c.node.index: {s.message_id: s.at for s in reversed(c.seen)} for c in run.clients}


def _after_partition(run: _Run, heal_s: float) -> tuple[float, float, list[_Late]] | None:
    """Seconds from the partition's heal until every message acked before it was on every
    other device, and the same less the time each late device's node lay killed meanwhile (a
    kill after the heal is a fault of its own, not the partition's), and the latest arrivals
    by the second figure (None: some never arrived)."""
    arrived = _first_shown(run)
    late: list[_Late] = []
    for a in run.acked():
        if a.acked_at > heal_s:
            continue
        for device, shown in arrived.items():
            if device == a.device:
                continue
            at = shown.get(a.message_id)
            if at is None:
                return None
            down = run.log.down_s(device, heal_s, at)
            late.append(_Late(a.message_id, a.device, device, a.sent_at, a.acked_at, at, down))
    latest = max([0.0, *(p.arrived_s - heal_s for p in late)])
    latest_up = max([0.0, *(p.arrived_s - p.down_s - heal_s for p in late)])
    late.sort(key=lambda p: p.arrived_s - p.down_s, reverse=True)
    return latest, latest_up, late[:_LATEST]


async def _simulate(config: SimulateConfig, root: Path, sockets: Path) -> dict[str, Any]:
    netlab: NetLab | None = None
    if config.needs_namespaces:
        why = netlab_unavailable()
        if why is not None:
            raise SimulationFailed(f"--loss and --partition need network namespaces: {why}")
        netlab = NetLab().__enter__()
    plan, scripts, flags = _plan(config), _scripts(config), config.node_flags
    mesh = Mesh(root, sockets, plan, scripts, netlab, config.latency, config.seed, flags)
    run = _Run(config, mesh)
    rng = random.Random(config.seed)
    tasks: list[asyncio.Task[Any]] = []
    try:
        try:
            async with asyncio.timeout(_SETUP_S):
                room = await _set_up(run)
        except TimeoutError:
            raise SimulationFailed(f"the mesh was not up in {_SETUP_S} s: {run.setup}") from None
        run.start = time.monotonic()
        for client in run.clients:
            client.start = run.start
        if config.latency is not None:  # the setup's connections are still open: seen too
            tasks.append(asyncio.create_task(mesh.watch_unproxied()))
        _set_loss(run, True)
        faults = [asyncio.create_task(_kills(run, rng)), asyncio.create_task(_partition(run))]
        tasks += faults
        if config.progress:
            tasks.append(asyncio.create_task(_progress(run)))
        await _send_loop(run, rng)
        run.over.set()  # a partition heals now; a node killed is restarted now
        await asyncio.gather(*faults)
        _set_loss(run, False)
        converge_s = await _drain(run)
        digests, events = await _digests(run, room)
        deadline = run.now() + run.config.converge_timeout
        while converge_s is not None and not _siblings_equal(digests) and run.now() < deadline:
            # receipts of the last messages may still be on their way to a sibling
            await asyncio.sleep(0.25)
            digests, events = await _digests(run, room)
        histories = {c.node.index: await _history(c.node, room) for c in run.clients}
        return _report(run, converge_s, digests, histories, events)
    finally:
        tasks += run.readers
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_quietly(mesh)
        if netlab is not None:
            netlab.close()
        if config.progress:
            print(file=sys.stderr)


_REFUSED: Final = re.compile(r"home \S+ rejected \S+ with code (\d+); dropped from the outbox")
_BANNED: Final = re.compile(r"(?:peer|address prefix) \S+ banned for")


def _refusals(run: _Run) -> tuple[dict[str, int], int]:
    """What the nodes' logs say honest peers refused of each other: the outbox's refusals by
    error code, and the bans (SPEC §11.6). Both lines read alike in the releases an upgrade
    run mixes (SPEC §20.7)."""
    codes: dict[str, int] = {}
    bans = 0
    for node in run.mesh.nodes:
        path = node.data_dir.parent / f"node{node.index}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        for code in _REFUSED.findall(text):
            codes[code] = codes.get(code, 0) + 1
        bans += len(_BANNED.findall(text))
    return dict(sorted(codes.items())), bans


def _report(
    run: _Run,
    converge_s: float | None,
    digests: dict[str, list[str]],
    histories: dict[int, list[Seen]],
    events: dict[str, list[int]],
) -> dict[str, Any]:
    config = run.config
    ours = hearthmesh_script()
    seen = {c.node.index: c.seen for c in run.clients}
    acks = {c.node.index: c.acks for c in run.clients}
    receipts = [r for c in run.clients for r in c.receipts]
    device_user = [n.user for n in run.mesh.nodes]
    acked = run.acked()
    verdict = check(acked, seen, acks, receipts, device_user, histories)
    latencies = [latency for _, latency in verdict.latencies]
    partition = config.partition
    after_partition = None if partition is None else _after_partition(run, partition.heal_s)
    siblings_equal = _siblings_equal(digests)
    # What every member must show alike: the room's messages, in history order (SPEC §4.5).
    # The whole digest also covers receipts and ROOM_KEYs, which a device may hold back
    # while it lacks their session (SPEC §27.11): reported, not judged.
    messages_equal = len({tuple(s.message_id for s in h) for h in histories.values()}) == 1
    refused, bans = _refusals(run)
    ok = verdict.ok and converge_s is not None and siblings_equal and messages_equal
    if config.upgrade is not None:  # one release refusing what the other sends (SPEC §20.7)
        ok = ok and not refused and bans == 0
    report: dict[str, Any] = {
        "config": {
            "nodes": config.nodes,
            "users": config.chatting_users,
            "devices": config.devices,
            "loss_pct": config.loss,
            "latency_ms": None if config.latency is None else config.latency.delay_s * 1000,
            "jitter_ms": None if config.latency is None else config.latency.jitter_s * 1000,
            "kill_every_s": config.kill_every,
            "partition": None
            if partition is None
            else {"start_s": partition.start_s, "length_s": partition.length_s},
            "duration_s": config.duration,
            "rate_per_s": config.rate,
            "seed": config.seed,
            "namespaces": config.needs_namespaces,
            "upgrade": None if config.upgrade is None else str(config.upgrade),
            "old_version_nodes": [n.index for n in run.mesh.nodes if n.script != ours],
        },
        "setup_s": {step: round(at, 2) for step, at in run.setup.items()},
        "sent": run.serial,
        "not_sent_node_down": run.unsent,
        "acked": len(acked),
        **verdict.as_json(),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "receipts_seen": len(receipts),
        "kills": len(run.log.times("kill")),
        "restarts": sum(n.restarts for n in run.mesh.nodes),
        "reconnects": sum(c.connections for c in run.clients) - len(run.clients),
        "resyncs": sum(c.resyncs for c in run.clients),
        "client_errors": sum(len(c.errors) for c in run.clients),
        "converged": converge_s is not None,
        "converge_s": None if converge_s is None else round(converge_s, 2),
        "converge_after_partition_s": None
        if after_partition is None
        else round(after_partition[0], 2),
        "converge_after_partition_up_s": None
        if after_partition is None
        else round(after_partition[1], 2),
        "after_partition_latest": []
        if after_partition is None
        else [late.as_json() for late in after_partition[2]],
        "digests_equal_per_user": siblings_equal,
        "digests_equal_all": len({d for ds in digests.values() for d in ds}) == 1,
        "history_events": events,
        "messages_equal_all": messages_equal,
        "refused_by_homes": refused,
        # a peer that dialled a node's real port went past its delay (--latency; not judged)
        "unproxied_connections": [
            {"node": node, "peer": f"{host}:{port}"}
            for node, (host, port) in sorted(run.mesh.unproxied)
        ],
        "bans": bans,
        "faults": run.log.as_json(),
        "ok": ok,
    }
    if config.out is not None:
        from hearthmesh.tools.simulate.plot import plot_latency

        config.out.mkdir(parents=True, exist_ok=True)
        setting = (
            f"({config.nodes} nodes, {config.loss:g} % loss, kill every {config.kill_every:g} s, "
            f"{len(acked)} acked)"
        )
        png = plot_latency(config.out / "latency.png", verdict.latencies, run.log, setting=setting)
        report["plot"] = str(png)
        report["arrivals"] = str(_write_arrivals(config.out / "arrivals.jsonl", run))
    return report


def _write_arrivals(path: Path, run: _Run) -> Path:
    """One JSON line per acked message and other device: when it was sent, acked and shown
    there (null: never), in seconds into the workload; the nodes' logs say why one was late."""
    shown = _first_shown(run)
    with path.open("w") as out:
        for a in run.acked():
            for device, at in shown.items():
                if device != a.device:
                    line = {
                        "message_id": a.message_id,
                        "from_node": a.device,
                        "to_node": device,
                        "sent_s": round(a.sent_at, 3),
                        "acked_s": round(a.acked_at, 3),
                        "shown_s": None if a.message_id not in at else round(at[a.message_id], 3),
                    }
                    out.write(json.dumps(line) + "\n")
    return path


async def run_simulation(config: SimulateConfig) -> dict[str, Any]:
    """Run one simulation; the JSON report (see the module docstring)."""
    with (
        tempfile.TemporaryDirectory(prefix="hearthmesh-simulate-") as scratch,
        tempfile.TemporaryDirectory(prefix="hmsim", dir="/tmp") as sockets,  # short socket paths
    ):
        root = Path(scratch)
        if config.out is not None:  # keep the nodes' data dirs and logs beside the report
            root = config.out / "nodes"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
        return await _simulate(config, root, Path(sockets))


def simulate(config: SimulateConfig) -> dict[str, Any]:
    """`run_simulation` in a new event loop (the CLI)."""
    return asyncio.run(run_simulation(config))
