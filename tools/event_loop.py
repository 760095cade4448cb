"""The event loop a node process runs on: uvloop's, unless the `uvloop` setting is off.

uvloop runs callbacks, transport reads and writes and `call_soon_threadsafe` (the trio bridge's
and the store writer's hand-backs, ARCHITECTURE §5) in C. Only processes that exist to run a
node choose it (`hearthmesh run`, `node_process`, the sender node of `bench delivery`); an app
embedding a node keeps whatever loop it runs, and the node works on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_node_loop"]

try:  # with the module, not at the loop's start: a zygote's forks find it imported (~10 ms)
    import uvloop
except ImportError:  # a platform without its wheel: asyncio's own loop
    HAVE_UVLOOP = False
else:
    HAVE_UVLOOP = True

T = TypeVar("T")


def run_node_loop(main: Coroutine[Any, Any, T], *, uvloop: bool) -> T:
    """`asyncio.run(main)` on uvloop's loop if `uvloop` and it is installed, else asyncio's."""
    with asyncio.Runner(loop_factory=_uvloop_factory() if uvloop else None) as runner:
        return runner.run(main)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    return uvloop.new_event_loop if HAVE_UVLOOP else None
