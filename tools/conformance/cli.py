"""`hearthmesh conformance ...`: the command line of the conformance tools (SPEC §20).

State: none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hearthmesh.protocol.capabilities import Level

if TYPE_CHECKING:
    from .suite import SuiteReport

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
    vectors = tools.add_parser(
        "vectors", help="every vector through an implementation, as JSON lines"
    )
    vectors.add_argument(
        "--impl", metavar="CMD", help="the implementation's command line (default: ours)"
    )
    run = tools.add_parser(
        "node",
        aliases=["run"],
        help="the black-box suite against a running node; prints one JSON report",
    )
    run.add_argument("--peer", required=True, metavar="MULTIADDR", help="ending in /p2p/<id>")
    run.add_argument(
        "--api", metavar="URL", help="the node's client API, e.g. http://127.0.0.1:8470"
    )
    run.add_argument("--token-file", metavar="FILE", help="the API token (with --api)")
    run.add_argument("--timeout", type=float, default=180.0, help="seconds for the whole run")
    run.add_argument(
        "--seed", type=int, help="replay the random choices of the run that printed this seed"
    )
    run.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON line per case, then the summary line (without the cases)",
    )
    run.add_argument(
        "--level",
        dest="levels",
        action="append",
        choices=[level.value for level in Level],  # the revisions' levels too (SPEC §20.5)
        help="test these capability levels (repeatable; default: those the node advertises)",
    )


def run_conformance(args: argparse.Namespace) -> int:
    """Run the chosen tool; 0 when every check passed, 1 otherwise (2: bad arguments)."""
    if args.tool == "vectors":
        from .vector_driver import OUR_IMPL, drive

        vector_report = drive(args.impl or OUR_IMPL)
        print(json.dumps(vector_report.as_json()))
        return 0 if vector_report.passed else 1
    if args.tool in ("node", "run"):
        if (args.api is None) != (args.token_file is None):
            print("error: --api and --token-file go together", file=sys.stderr)
            return 2
        suite = asyncio.run(_run_suite(args))
        summary = suite.as_json()
        if args.jsonl:
            del summary["results"]
            for result in suite.results:
                print(json.dumps(result.as_json()))
        print(json.dumps(summary))
        return 0 if suite.passed else 1
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


async def _run_suite(args: argparse.Namespace) -> SuiteReport:
    from hearthmesh.tools.client import ApiClient

    from .suite import run_suite

    levels = None if not args.levels else frozenset(Level(name) for name in args.levels)
    async with asyncio.timeout(args.timeout):
        if args.api is None:
            return await run_suite(args.peer, levels=levels, seed=args.seed)
        token = await asyncio.to_thread(Path(args.token_file).read_text, encoding="utf-8")
        async with ApiClient(args.api, token.strip()) as api:
            return await run_suite(args.peer, api=api, levels=levels, seed=args.seed)
