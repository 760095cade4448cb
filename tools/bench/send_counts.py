"""`hearthmesh bench send-counts`: what one same-node message costs its home, counted.

Issue #13's same-node aim needs the loop's Python work per message cut, and this machine's load
moves every timing, so the cut is argued by counts that do not depend on it. `bench api`'s
layout (alice's and bob's homes each a `hearthmesh run` process, a direct room, alice's phone and
laptop on A, bob's client on B acking each message, so his receipts come back to A): the phone
sends N messages one at a time, each waited for on the laptop, and the driver then waits for
every receipt, so each message's whole work on A is inside the window, bob's receipt included.

Two windows on alice's loop thread, opened and closed by signals to her node
(`tools/bench/path_counts.py`):

- `loop_user_cpu_us_per_msg` and `loop_system_cpu_us_per_msg` (the thread's `getrusage`; the
  system part is mostly the kernel's work for a commit made on the loop's thread, its writes and
  flushes) and `process_cpu_us_per_msg` (every thread) over a window without the profiler: CPU
  time, which load stretches less than latency but still stretches (a VM's steal, caches);
- a second window under cProfile on the loop thread alone (its clock `thread_time_ns`): the
  calls per message, in total (`python_calls_per_msg`, C calls included; a coroutine's every
  resumption counts as a call) and by kind (`counts`, `KINDS`: the store's overlay reads and
  staged writes, LMDB's gets and cursors, read snapshots, staged batches, commits on the loop,
  submits to the store's threads, calls into trio, CBOR encodes and decodes, JSON frames out
  and in, and tasks created), and the most called functions (`top`). Counts do not depend on
  the machine's load, within what the traffic itself varies (a receipt coalesced with another,
  a batch of the outbox). `HEARTHMESH_SEND_COUNTS_PSTATS` keeps the profile (`pstats`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

from hearthmesh.tools.bench.api import BenchClient, open_direct_room, settled, three_clients
from hearthmesh.tools.bench.path_counts import (
    COUNT_CALLS,
    COUNT_CPU,
    COUNT_STOP,
    PATH_COUNTS_ENV,
    Window,
)
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["KINDS", "PSTATS_ENV", "kind_counts", "run"]

PSTATS_ENV: Final = "HEARTHMESH_SEND_COUNTS_PSTATS"
"""A file to keep the profiled window's cProfile stats in (`pstats`: who calls what)."""

KINDS: Final[dict[str, tuple[str, ...]]] = {
    "overlay_reads": ("storage/staged.py:get", "storage/staged.py:scan"),
    "staged_writes": (
        "storage/staged.py:put",
        "storage/staged.py:insert",
        "storage/staged.py:delete",
    ),
    "lmdb_gets": ("<method 'get' of 'Transaction' objects>",),
    "lmdb_cursors": ("<method 'cursor' of 'Transaction' objects>",),
    "read_snapshots": ("<method 'begin' of 'Environment' objects>",),
    "staged_batches": ("storage/lmdb_store.py:stage_batch",),
    "commits_in_place": ("storage/async_store.py:_commit_inline",),
    "to_other_threads": ("concurrent/futures/thread.py:submit",),
    "to_trio": ("node/p2p/bridge.py:run", "node/p2p/bridge.py:run_sync_soon"),
    "cbor_encodes": ("protocol/canonical.py:encode_canonical",),
    "cbor_decodes": ("protocol/canonical.py:read_kept",),
    "json_frames_out": ("json/encoder.py:encode",),
    "json_frames_in": ("json/__init__.py:loads",),
}
"""What `counts` adds up, by kind: the functions (as `path_counts` names them) each counts;
`to_other_threads` is the store's writer and reader threads' submits."""


def kind_counts(calls: dict[str, int], messages: int) -> dict[str, float]:
    """Per message, the calls of each of `KINDS`."""
    return {
        kind: round(sum(calls.get(name, 0) for name in names) / messages, 2)
        for kind, names in KINDS.items()
    }


def _per_message(windows: list[Window], messages: int, top: int) -> dict[str, Any]:
    plain, profiled = windows[-2:]  # the warm-up's window first
    calls: dict[str, int] = profiled["calls"]
    ranked = sorted(calls.items(), key=lambda item: -item[1])[:top]
    return {
        "loop_user_cpu_us_per_msg": round(plain["loop_user_ns"] / messages / 1000, 1),
        "loop_system_cpu_us_per_msg": round(plain["loop_system_ns"] / messages / 1000, 1),
        "process_cpu_us_per_msg": round(plain["process_cpu_ns"] / messages / 1000, 1),
        "python_calls_per_msg": round(sum(calls.values()) / messages, 1),
        "counts": {
            **kind_counts(calls, messages),
            "tasks_created": round(profiled["tasks_created"] / messages, 2),
        },
        "top": {name: round(count / messages, 2) for name, count in ranked},
    }


async def _window(
    alice: HomeProcess,
    opening: int,
    phone: BenchClient,
    laptop: BenchClient,
    settle: list[BenchClient],
    room: str,
    messages: int,
    tag: str,
) -> None:
    """`messages` same-node messages one at a time inside one window of alice's node."""
    await settled(phone, settle)
    os.kill(alice.process.pid, opening)
    for i in range(messages):
        client_id = f"{tag}{i}"
        frame = {"event": "send", "room_id": room, "message": "x" * 200, "client_id": client_id}
        await phone.ws.send_str(json.dumps(frame))
        await phone.wait(lambda c=client_id: c in phone.sent)  # type: ignore[misc]
        sent = phone.sent[client_id]
        await laptop.wait(lambda m=sent: m in laptop.arrived)  # type: ignore[misc]
    await settled(phone, settle)  # bob's receipts stored on A too
    os.kill(alice.process.pid, COUNT_STOP)


async def _bench(messages: int, top: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-send-counts-") as tmp:
        counted = Path(tmp) / "alice-counts.json"
        os.environ[PATH_COUNTS_ENV] = str(counted)
        try:
            alice = await spawn_home(Path(tmp) / "a", name="alice")
        finally:
            del os.environ[PATH_COUNTS_ENV]
        try:
            bob = await spawn_home(Path(tmp) / "b", name="bob")
            try:
                await _drive(alice, bob, messages)
            finally:
                await bob.terminate()
        finally:
            await alice.terminate()
        windows: list[Window] = json.loads(counted.read_text())
        keep = os.environ.get(PSTATS_ENV)
        if keep:
            shutil.copy(f"{counted}.{len(windows) - 1}.pstats", keep)
    return {"messages": messages, **_per_message(windows, messages, top)}


async def _drive(alice: HomeProcess, bob: HomeProcess, messages: int) -> None:
    async with (
        ApiClient(alice.api, alice.token) as alice_api,
        ApiClient(bob.api, bob.token) as bob_api,
    ):
        room = await open_direct_room(alice, bob, alice_api, bob_api)
        async with three_clients(alice, bob, alice_api, bob_api) as (phone, laptop, bob_client):
            args = (phone, laptop, [laptop, bob_client], room)
            await _window(alice, COUNT_CPU, *args, messages=messages // 5, tag="warm")
            await _window(alice, COUNT_CPU, *args, messages=messages, tag="cpu")
            await _window(alice, COUNT_CALLS, *args, messages=messages, tag="calls")


def run(quick: bool) -> dict[str, Any]:
    """Counts and CPU per same-node message on the sending home (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(50 if quick else 400, top=40))
