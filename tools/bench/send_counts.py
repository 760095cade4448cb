"""`hearthmesh bench send-counts`: what one same-node message costs its home, counted.

Issue #13's same-node aim needs the loop's Python work per message cut, and this machine's load
moves every timing, so the cut is argued by counts that do not depend on it. `bench api`'s
layout (alice's and bob's homes each a `hearthmesh run` process, a direct room, alice's phone and
laptop on A, bob's client on B acking each message, so his receipts come back to A): the phone
sends N messages one at a time, each waited for on the laptop, and the driver then waits for
every receipt, so each message's whole work on A is inside the window, bob's receipt included.
Bob's home is measured in the same windows (`receiver`): the arrival, bob's ack and his receipt.

Alice's node measures itself in windows the driver opens and closes by signals
(`tools/bench/cost_probe.py`, the probe `bench delivery-cost` reads too, so the figures have the
same names): a warm-up, then a counted window (cProfile on the loop thread: the calls per
message in total, by kind and the most called) and a plain one (each thread group's CPU and the
loop thread's user and system time, the tasks, the store's batches and transactions). Counts do
not depend on the machine's load, within what the traffic itself varies (a receipt coalesced
with another, a batch of the outbox). `HEARTHMESH_COST_PSTATS=DIR` keeps the profiles (bob's in
`DIR/receiver`).
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
    PSTATS_ENV,
    WINDOW_END,
    WINDOW_START,
    plain_and_counted,
    read_windows,
)
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["run"]


Probed = tuple[HomeProcess, Path]
"""A home and the file its cost windows go to."""


async def _window(
    homes: tuple[Probed, ...],
    k: int,
    phone: BenchClient,
    laptop: BenchClient,
    settle: list[BenchClient],
    room: str,
    messages: int,
) -> list[dict[str, Any]]:
    """The k-th window (from 0) of each home: `messages` same-node messages one at a time; its
    figures, a home's each."""
    await settled(phone, settle)
    for home, cost_file in homes:
        os.kill(home.process.pid, WINDOW_START)
        await read_windows(cost_file, 2 * k + 1)  # open before the first send
    for i in range(messages):
        client_id = f"w{k}-{i}"
        frame = {"event": "send", "room_id": room, "message": "x" * 200, "client_id": client_id}
        await phone.ws.send_str(json.dumps(frame))
        await phone.wait(lambda c=client_id: c in phone.sent)  # type: ignore[misc]
        sent = phone.sent[client_id]
        await laptop.wait(lambda m=sent: m in laptop.arrived)  # type: ignore[misc]
    await settled(phone, settle)  # bob's receipts stored on A too
    for home, _ in homes:
        os.kill(home.process.pid, WINDOW_END)
    return [(await read_windows(cost_file, 2 * k + 2))[-1] for _, cost_file in homes]


async def _bench(messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-send-counts-") as tmp:
        alice = await _probed(Path(tmp), "alice", os.environ.get(PSTATS_ENV))
        try:
            bob = await _probed(Path(tmp), "bob", _subdir(os.environ.get(PSTATS_ENV), "receiver"))
            try:
                windows = await _drive(alice, bob, messages)
            finally:
                await bob[0].terminate()
        finally:
            await alice[0].terminate()
    (a_counted, b_counted), (a_plain, b_plain) = windows
    return {
        "messages": messages,
        **plain_and_counted(a_plain, a_counted, messages),
        "receiver": plain_and_counted(b_plain, b_counted, messages),
    }


def _subdir(where: str | None, name: str) -> str | None:
    if where is None:
        return None
    (Path(where) / name).mkdir(parents=True, exist_ok=True)
    return str(Path(where) / name)


async def _probed(tmp: Path, name: str, pstats: str | None) -> Probed:
    """A home whose node process writes its cost windows to a file of its own."""
    cost_file = tmp / f"{name}-cost.jsonl"
    saved = os.environ.get(PSTATS_ENV)
    os.environ[COST_ENV] = str(cost_file)  # for this node alone
    if pstats is not None:
        os.environ[PSTATS_ENV] = pstats
    try:
        return await spawn_home(tmp / name, name=name), cost_file
    finally:
        del os.environ[COST_ENV]
        if saved is not None:
            os.environ[PSTATS_ENV] = saved


async def _drive(
    alice: Probed, bob: Probed, messages: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the counted windows, the plain ones), each alice's then bob's, after a warm-up."""
    async with (
        ApiClient(alice[0].api, alice[0].token) as alice_api,
        ApiClient(bob[0].api, bob[0].token) as bob_api,
    ):
        room = await open_direct_room(alice[0], bob[0], alice_api, bob_api)
        async with three_clients(alice[0], bob[0], alice_api, bob_api) as (
            phone,
            laptop,
            bob_client,
        ):
            args = (phone, laptop, [laptop, bob_client], room)
            await _window((alice, bob), 0, *args, messages=messages // 5)
            counted = await _window((alice, bob), 1, *args, messages=messages)
            plain = await _window((alice, bob), 2, *args, messages=messages)
    return counted, plain


def run(quick: bool) -> dict[str, Any]:
    """Counts and CPU per same-node message on the sending home, and on the receiving one
    (`receiver`; see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(20 if quick else 400))  # quick: a smoke run of every window
