"""`hearthmesh bench sync`: set reconciliation (SPEC §21) cost, in process, protocol level.

Two `Reconciler`s over in-memory `SortedItems` are driven against each other; nothing touches
the network or the store, so the figures are the protocol's own: messages, bytes and CPU time.
Events are one second apart with SHA-256 ids. Differences are spread uniformly at random (fixed
seed), the worst case; `diff_bytes_newest` shows the common case of a device missing the newest
events. `new_device_bytes` adds what moving the missing events would cost: their count times the
wire size of a sealed 200-byte text envelope. The `node_*` figures come from real nodes
(`sync_nodes.py`): a device linked to a primary that holds the events, until its digest agrees.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Iterable
from typing import Any, Final

from hearthmesh.protocol.envelope import Kind, MessageId, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, generate_keypair
from hearthmesh.protocol.reconcile import DEFAULT_FRAME_LIMIT_BYTES, Reconciler, SortedItems
from hearthmesh.tools.bench.sync_nodes import node_new_device

__all__ = ["run"]

BODY_BYTES: Final = 200
DIFF_SIZES: Final = (1, 10, 100, 1000)
_WALL_BASE_MS: Final = 1_700_000_000_000
_SEED: Final = 6


def _item(n: int) -> tuple[Timestamp, MessageId]:
    return (
        Timestamp(wall_ms=_WALL_BASE_MS + n * 1000, counter=0),
        MessageId(hashlib.sha256(n.to_bytes(8, "big")).digest()),
    )


def _exchange(a_numbers: Iterable[int], b_numbers: Iterable[int]) -> dict[str, Any]:
    """Reconcile a (initiator) with b; messages, bytes, time and ids found on each side."""
    a = Reconciler(SortedItems(_item(n) for n in a_numbers))
    b = Reconciler(SortedItems(_item(n) for n in b_numbers))
    started = time.perf_counter()
    message: bytes | None = a.initiate()
    messages, total, found, turn = 0, 0, 0, 0
    while message is not None:
        messages += 1
        total += len(message)
        step = (b if turn % 2 == 0 else a).reconcile(message)
        found += len(step.need)
        message = step.reply
        turn += 1
    return {
        "round_trips": math.ceil(messages / 2),
        "messages": messages,
        "bytes": total,
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "needed": found,
    }


def _envelope_bytes() -> int:
    """Wire size of one sealed text envelope with a BODY_BYTES body."""
    user, device = generate_keypair(os.urandom), generate_keypair(os.urandom)
    return len(
        seal(
            device,
            kind=Kind.MESSAGE,
            room=RoomId(bytes(32)),
            sender_user=UserId(user.public),
            seq=1,
            hlc=Timestamp(wall_ms=_WALL_BASE_MS, counter=0),
            content_type="text/plain",
            body=bytes(BODY_BYTES),
        ).wire
    )


def run(quick: bool) -> dict[str, Any]:
    """In-sync, growing-difference and new-device reconciliations of `events` events."""
    events = 4_000 if quick else 100_000  # quick: a new device still takes more than one frame
    everything = range(events)
    rng = random.Random(_SEED)
    started = time.perf_counter()
    SortedItems(_item(n) for n in everything)
    index_ms = round((time.perf_counter() - started) * 1000, 1)

    insync = _exchange(everything, everything)
    diff_bytes: dict[str, int] = {}
    diff_round_trips: dict[str, int] = {}
    diff_bytes_newest: dict[str, int] = {}
    timings: dict[str, float] = {"insync": insync["ms"]}
    for size in DIFF_SIZES:
        missing = set(rng.sample(everything, size))
        spread = _exchange(everything, (n for n in everything if n not in missing))
        assert spread["needed"] == size, spread  # the initiator found every one
        diff_bytes[str(size)] = spread["bytes"]
        diff_round_trips[str(size)] = spread["round_trips"]
        timings[f"diff_{size}"] = spread["ms"]
        newest = _exchange(everything, range(events - size))
        diff_bytes_newest[str(size)] = newest["bytes"]
    new_device = _exchange((), everything)
    assert new_device["needed"] == events, new_device
    timings["new_device"] = new_device["ms"]
    envelope_bytes = _envelope_bytes()
    return {
        "events": events,
        "frame_limit_bytes": DEFAULT_FRAME_LIMIT_BYTES,
        "insync_round_trips": insync["round_trips"],
        "insync_bytes": insync["bytes"],
        "diff_bytes": diff_bytes,
        "diff_round_trips": diff_round_trips,
        "diff_bytes_newest": diff_bytes_newest,
        "new_device_reconcile_s": round(new_device["ms"] / 1000, 3),
        "new_device_bytes": new_device["bytes"] + events * envelope_bytes,
        "new_device_reconcile_bytes": new_device["bytes"],
        "new_device_round_trips": new_device["round_trips"],
        "envelope_bytes": envelope_bytes,
        "new_device_counted": (
            "new_device_bytes = reconciliation messages both ways + events x envelope_bytes "
            f"(sealed {BODY_BYTES}-byte text body); new_device_reconcile_s = reconciliation CPU "
            "time only; new_device_s = real nodes: a linked device from connect until its digest "
            "equals the primary's (both nodes in this one process)"
        ),
        "index_build_ms": index_ms,
        "reconcile_ms": timings,
        **node_new_device(100 if quick else events),  # quick: a smoke run; the sends cost most
    }
