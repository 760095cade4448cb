"""`hearthmesh bench send-counts`: what one same-node message costs its home, counted.

Issue #13's same-node aim needs the loop's Python work per message cut, and this machine's load
moves every timing, so the cut is argued by counts that do not depend on it. `bench api`'s
layout (alice's and bob's homes each a `hearthmesh run` process, a direct room, alice's phone and
laptop on A, bob's client on B acking each message, so his receipts come back to A): the phone
sends N messages one at a time, each waited for on the laptop, and the driver then waits for
every receipt, so each message's whole work on A is inside the window, bob's receipt included.

Alice's node measures itself in windows the driver opens and closes by signals
(`tools/bench/cost_probe.py`, the probe `bench delivery-cost` reads too, so the figures have the
same names): a warm-up, then a counted window (cProfile on the loop thread: the calls per
message in total, by kind and the most called) and a plain one (each thread group's CPU and the
loop thread's user and system time, the tasks, the store's batches and transactions). Counts do
not depend on the machine's load, within what the traffic itself varies (a receipt coalesced
with another, a batch of the outbox). `HEARTHMESH_COST_PSTATS=DIR` keeps the profile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from hearthmesh.tools.bench.api import BenchClient, open_direct_room, settled, three_clients
from hearthmesh.tools.bench.cost_probe import (
    COST_ENV,
    WINDOW_END,
    WINDOW_START,
    plain_and_counted,
    read_windows,
)
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["run"]


async def _window(
    alice: HomeProcess,
    cost_file: Path,
    k: int,
    phone: BenchClient,
    laptop: BenchClient,
    settle: list[BenchClient],
    room: str,
    messages: int,
) -> dict[str, Any]:
    """The k-th window (from 0) of alice's node: `messages` same-node messages one at a time;
    its figures."""
    await settled(phone, settle)
    os.kill(alice.process.pid, WINDOW_START)
    await read_windows(cost_file, 2 * k + 1)  # open before the first send
    for i in range(messages):
        client_id = f"w{k}-{i}"
        frame = {"event": "send", "room_id": room, "message": "x" * 200, "client_id": client_id}
        await phone.ws.send_str(json.dumps(frame))
        await phone.wait(lambda c=client_id: c in phone.sent)  # type: ignore[misc]
        sent = phone.sent[client_id]
        await laptop.wait(lambda m=sent: m in laptop.arrived)  # type: ignore[misc]
    await settled(phone, settle)  # bob's receipts stored on A too
    os.kill(alice.process.pid, WINDOW_END)
    return (await read_windows(cost_file, 2 * k + 2))[-1]


async def _bench(messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-send-counts-") as tmp:
        cost_file = Path(tmp) / "alice-cost.jsonl"
        os.environ[COST_ENV] = str(cost_file)  # for alice's node alone
        try:
            alice = await spawn_home(Path(tmp) / "a", name="alice")
        finally:
            del os.environ[COST_ENV]
        try:
            bob = await spawn_home(Path(tmp) / "b", name="bob")
            try:
                counted, plain = await _drive(alice, bob, cost_file, messages)
            finally:
                await bob.terminate()
        finally:
            await alice.terminate()
    return {"messages": messages, **plain_and_counted(plain, counted, messages)}


async def _drive(
    alice: HomeProcess, bob: HomeProcess, cost_file: Path, messages: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the counted window, the plain one), after a warm-up window."""
    async with (
        ApiClient(alice.api, alice.token) as alice_api,
        ApiClient(bob.api, bob.token) as bob_api,
    ):
        room = await open_direct_room(alice, bob, alice_api, bob_api)
        async with three_clients(alice, bob, alice_api, bob_api) as (phone, laptop, bob_client):
            args = (phone, laptop, [laptop, bob_client], room)
            await _window(alice, cost_file, 0, *args, messages=messages // 5)
            counted = await _window(alice, cost_file, 1, *args, messages=messages)
            plain = await _window(alice, cost_file, 2, *args, messages=messages)
    return counted, plain


def run(quick: bool) -> dict[str, Any]:
    """Counts and CPU per same-node message on the sending home (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(20 if quick else 400))  # quick: a smoke run of every window
