"""The xdist workers, forked from the suite's shared zygote (tools/zygote.py) instead of
started as new interpreters: each then begins with the node, libp2p, Hypothesis and pytest
imported, not ~1 s of CPU from them (tests/conftest.py points xdist's `popen` specs here).

execnet starts a worker as `PYTHON -u -c "import sys;exec(eval(sys.stdin.readline()))"` and
speaks to it over that process's stdin and stdout. With `popen//python=` naming this script,
it runs here instead: it asks the zygote for a child that runs the same `-c` code on this
process's stdin, stdout, stderr, environment and working directory, hands those pipes over,
and ends with the child's exit code. execnet killing it kills the worker too (the zygote
kills a closed connection's children). Without a shared zygote it execs the interpreter.
"""

from __future__ import annotations

import builtins
import gc
import os
import sys

ENTRY = "tests.xdist_zygote:bootstrap"


def bootstrap() -> None:
    """In the forked worker: run the `-c` code as the interpreter would (a fresh `__main__`
    namespace; sys.argv is ["-c"])."""
    # The zygote froze its imports (out of every collection, for its node processes'
    # copy-on-write); a worker's collector sees them as a new interpreter's would, until
    # tests/conftest.py freezes what collection built. Frozen, gc.get_referrers misses
    # their references: Hypothesis' register_random then warned that trio's Random (which
    # trio's module holds) could be collected, when Hypothesis was imported after the fork.
    gc.unfreeze()
    code = sys.argv.pop(1)
    exec(code, {"__name__": "__main__", "__builtins__": builtins})


def main(args: list[str]) -> int:
    """`args`: the interpreter's options (-u, -B: the zygote's child has its own streams
    and the venv's bytecode cache), then `-c CODE`."""
    from hearthmesh.tools import zygote

    address = os.environ.get(zygote.ADDRESS_ENV)
    if address is None or "-c" not in args:
        os.execv(sys.executable, [sys.executable, *args])
    code = args[args.index("-c") + 1]
    exit_code = zygote.Connected(address).run(ENTRY, ["-c", code])
    return exit_code if exit_code >= 0 else 128 - exit_code  # -N: killed by signal N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
