"""`hearthmesh conformance ...`: the command line of the conformance tools (SPEC §20).

State: none.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_conformance_parser", "run_conformance"]


def add_conformance_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `conformance` command and its subcommands."""
    conformance = commands.add_parser("conformance", help="conformance tools (SPEC §20)")
    tools = conformance.add_subparsers(dest="tool", metavar="TOOL", required=True)
    simulate = tools.add_parser(
        "simulate", help="a seeded mesh simulation with invariants; prints one JSON report"
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--steps", type=int, default=1_000)
    simulate.add_argument("--nodes", type=int, default=4)
    simulate.add_argument("--loss", type=float, default=0.1, help="chance a frame is lost (0.1)")
    simulate.add_argument("--no-restarts", action="store_true", help="never kill a node")
    simulate.add_argument("--no-partitions", action="store_true", help="never split the mesh")


def run_conformance(args: argparse.Namespace) -> int:
    """Run the chosen tool; 0 when every check passed, 1 otherwise."""
    from .simulate import SimConfig, simulate

    config = SimConfig(
        seed=args.seed,
        steps=args.steps,
        nodes=args.nodes,
        loss=args.loss,
        restarts=not args.no_restarts,
        partitions=not args.no_partitions,
    )
    report = simulate(config)
    print(json.dumps(report.as_json()))
    return 0 if report.ok else 1
