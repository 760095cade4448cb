"""A blocking call run off the trio thread, on a thread of its own started from it.

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`). Not
trio's worker threads: those are cached process-wide, so not in the network namespace of the
host that asks (a node started in a namespace, as the tests and benchmarks do, would open its
sockets on another network), and they outlive the trio run. A new thread shares the namespace
of the trio thread that starts it, and ends with its call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import trio

__all__ = ["own_thread"]

T = TypeVar("T")


async def own_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """`fn(*args)` on a new thread named `name`; its result or its exception here. Cancelling
    the wait abandons the call: it finishes on its thread, and nobody reads its result."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except Exception as exc:
            outcome.append((False, exc))
        with suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    threading.Thread(target=run, name=name, daemon=True).start()
    await done.wait()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result
