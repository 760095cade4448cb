"""The `hearthmesh` command line. Heavy imports (libp2p) happen inside the subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["main"]


def _version() -> str:
    try:
        return version("hearthmesh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearthmesh",
        description="hearthmesh: decentralized chat. Every node is a home node and a relay.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the hearthmesh and protocol versions")
    bench = commands.add_parser("bench", help="run a benchmark and print one JSON object")
    bench.add_argument("name", nargs="?", help="which benchmark (see --list)")
    bench.add_argument("--list", action="store_true", help="name the benchmarks")
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hearthmesh` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        from hearthmesh.protocol.envelope import PROTOCOL_VERSION

        print(f"hearthmesh {_version()} (protocol v{PROTOCOL_VERSION})")
        return 0
    if args.command == "bench":
        from hearthmesh.tools.bench.runner import run_bench

        return run_bench(args.name, list_only=args.list, quick=args.quick)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
