"""`hearthmesh simulate ...`: the command line of the process simulator (SPEC §20.4).

State: none.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hearthmesh.tools.settings import LOG_LEVELS

__all__ = ["add_simulate_parser", "run_simulate"]


def add_simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `simulate` command."""
    sim = commands.add_parser(
        "simulate",
        help="real node processes under faults, a chat workload and invariants; prints JSON",
        description="Run N `hearthmesh run` processes (in network namespaces when --loss or "
        "--partition asks), one client per device sending into one group, kill -9 and "
        "partition them, then check every acked message reached every device once, in order.",
    )
    sim.add_argument("--nodes", type=int, default=3, help="node processes (3)")
    sim.add_argument("--users", type=int, help="users that chat (nodes / devices)")
    sim.add_argument("--devices", type=int, default=1, help="devices per chatting user (1)")
    sim.add_argument("--loss", type=float, default=0.0, metavar="PCT", help="packet loss %%")
    sim.add_argument(
        "--latency",
        metavar="MS[±J]",
        help="one-way delay per hop in ms, optionally ± up to J ms (seeded): a TCP delay proxy "
        "in front of each node",
    )
    sim.add_argument("--kill-every", type=float, default=0.0, metavar="S", help="kill -9 a node")
    sim.add_argument("--down", type=float, default=3.0, metavar="S", help="a killed node's rest")
    sim.add_argument("--partition", metavar="AT+LEN[:i,j]", help="split the mesh at AT s for LEN s")
    sim.add_argument("--duration", type=float, default=60.0, metavar="S", help="workload (60)")
    sim.add_argument("--rate", type=float, default=5.0, help="messages a second, all nodes (5)")
    sim.add_argument("--messages", type=int, help="stop once this many were sent")
    sim.add_argument("--converge-timeout", type=float, default=120.0, metavar="S")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, metavar="DIR", help="write latency.png here")
    sim.add_argument("--upgrade", type=Path, metavar="OLD_VENV", help="odd nodes run that venv")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sim.add_argument(
        "--node-log-level",
        choices=LOG_LEVELS,
        help="what each node writes to its nodeN.log beside the report (warning)",
    )
    sim.add_argument(
        "--scale",
        metavar="N,N,...",
        help="instead: the cost per node at these mesh sizes and the latency to a group's "
        "last member (SPEC §20.6); uses --members, --idle, --duration, --rate, --out",
    )
    sim.add_argument("--members", type=int, default=0, help="--scale: group members (the users)")
    sim.add_argument(
        "--idle",
        type=float,
        default=None,
        metavar="S",
        help="--scale: idle phase (default 300 s: it holds the home records' period, §20.6)",
    )
    sim.add_argument(
        "--settle",
        type=float,
        default=10.0,
        metavar="S",
        help="--scale: wait after the group formed before the idle phase (10 s; the DHT's "
        "first walks and the connections they leave take about a minute, §20.6)",
    )
    sim.add_argument(
        "--first-sends",
        action="store_true",
        help="--scale: each node sends once before the idle phase, metered apart, so that no "
        "workload message is its sender's first (§20.6)",
    )
    sim.add_argument(
        "--group-homes",
        type=int,
        default=0,
        metavar="K",
        help="--scale: groups of K homes each (of --members each), every node in one, each sent "
        "into at --rate: a node's own workload held fixed while the mesh grows (§20.6)",
    )
    sim.add_argument(
        "--bystanders",
        type=int,
        default=0,
        metavar="N",
        help="--scale: N idle nodes beside each size, in a mesh of their own (a machine control)",
    )
    sim.add_argument(
        "--busy-bystanders",
        action="store_true",
        help="--scale: the bystanders form a group of --members and send into it at --rate "
        "during the workload",
    )


def run_simulate(args: argparse.Namespace) -> int:
    """0 when every invariant held and the mesh converged; 1 otherwise; 2 when the run could
    not be set up."""
    from hearthmesh.protocol.errors import HearthError
    from hearthmesh.tools import zygote
    from hearthmesh.tools.simulate.delay_proxy import parse_latency
    from hearthmesh.tools.simulate.faults import parse_partition
    from hearthmesh.tools.simulate.run import SimulateConfig, simulate

    if args.scale is not None:
        return _run_scale(args)
    zygote.enable()  # the nodes fork from one process that imported the node once
    try:
        partition = None if args.partition is None else parse_partition(args.partition, args.nodes)
        latency = None if args.latency is None else parse_latency(args.latency)
        config = SimulateConfig(
            nodes=args.nodes,
            users=args.users,
            devices=args.devices,
            loss=args.loss,
            latency=latency,
            kill_every=args.kill_every,
            down_s=args.down,
            partition=partition,
            duration=args.duration,
            rate=args.rate,
            messages=args.messages,
            converge_timeout=args.converge_timeout,
            seed=args.seed,
            out=args.out,
            upgrade=args.upgrade,
            progress=not args.no_progress,
            node_log_level=args.node_log_level,
        )
        report = simulate(config)
    except HearthError as exc:  # bad settings, no namespaces, a node that did not start
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0 if report["ok"] else 1


def _run_scale(args: argparse.Namespace) -> int:
    """`simulate --scale`: 0 when every size delivered every acked message once; 1 otherwise;
    2 when a size could not be set up."""
    from hearthmesh.protocol.errors import HearthError
    from hearthmesh.tools.simulate.scale import IDLE_S, ScaleConfig, scale
    from hearthmesh.tools.simulate.scale_groups import GroupsRefused, group_homes

    try:
        sizes = tuple(int(n) for n in args.scale.split(","))
    except ValueError:
        print(f"error: --scale {args.scale!r}: node counts like 10,25,50", file=sys.stderr)
        return 2
    if any(n < 2 for n in sizes):
        print("error: --scale: every size is at least 2 nodes", file=sys.stderr)
        return 2
    try:
        for size in sizes:
            group_homes(size, args.group_homes)
    except GroupsRefused as exc:
        print(f"error: --group-homes: {exc}", file=sys.stderr)
        return 2
    config = ScaleConfig(
        sizes=sizes,
        members=args.members,
        idle=IDLE_S if args.idle is None else args.idle,
        settle=args.settle,
        duration=args.duration,
        rate=args.rate,
        converge_timeout=args.converge_timeout,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress,
        bystanders=max(0, args.bystanders),
        busy_bystanders=args.busy_bystanders,
        node_log_level=args.node_log_level,
        first_sends=args.first_sends,
        group_homes=args.group_homes,
    )
    try:
        report = scale(config)
    except HearthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0 if report["ok"] else 1
