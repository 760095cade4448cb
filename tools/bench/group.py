"""`hearthmesh bench group`: joining a group by invite, and sending in a 256-member group.

Ten real nodes run in this process (one process each is too heavy for 2 cores shared with
others): the owner's and nine members'. A node is the home of one user (its keyring's), so the
other members are users whose homes are away: their deliveries wait parked in the owner's
outbox, as for members who are offline, and a probe of each costs a few rows (SPEC §11.5.2).
`--members` (or HEARTHMESH_BENCH_GROUP_MEMBERS) sets the size, up to 1,024; the JSON says how
many members have real homes.

`join_by_invite_ms`: from `Node.groups.join_by_invite` until the joiner holds the group's
membership history and is a member (what the client then shows), into a new group and, as
`join_by_invite_full_ms`, into the full group as its last member. `send_to_last_member_*`: from
the owner's `Node.send` until the last member's node takes the message in. `recall_converged_*`:
the owner recalls messages every real member holds; the share whose body all of them purged,
and the p99 time from the recall until the last of them did (SPEC §31.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Final

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.actions import RECALL_CONTENT_TYPE, Recall, encode_recall
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.tools.bench.stats import percentile, process_rss_mb
from hearthmesh.tools.process_gc import tune_collector

__all__ = ["MAX_MEMBERS", "MEMBERS_ENV", "REAL_NODES", "run"]

MEMBERS_ENV: Final = "HEARTHMESH_BENCH_GROUP_MEMBERS"
"""How many members the bench group has (`hearthmesh bench group --members N` sets it)."""
MAX_MEMBERS: Final = 1024
"""The most members a group is built for (the issue's bound)."""
REAL_NODES: Final = 10
"""Nodes run in this process: the owner's, and the members' who join by invite."""

_BODY = b"x" * 200
_FULL_JOIN_S = 300
"""How long the last member's join may take before the run reports it as timed out."""
_RECALL_S = 120
"""How long the recalls may take before the run reports the share that converged."""


def _config(path: Path) -> NodeConfig:
    return NodeConfig(data_dir=path, listen_addrs=("/ip4/127.0.0.1/tcp/0",))


async def _join_ms(owner: Node, joiner: Node, room: RoomId) -> float:
    link, _ = await owner.groups.create_invite(room)
    started = time.perf_counter()
    await joiner.groups.join_by_invite(link)
    return (time.perf_counter() - started) * 1000


async def _send_to(owner: Node, last: Node, room: RoomId, samples: int) -> list[float]:
    latencies = []
    events = last.events()
    for _ in range(samples):
        started = time.perf_counter()
        sent = await owner.send(room, _BODY)
        async for event in events:
            if isinstance(event, MessageReceived) and event.envelope.message_id == sent.message_id:
                break
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def _recall_ms(
    owner: Node, members: list[Node], room: RoomId, samples: int, took: list[float]
) -> None:
    """Add to `took` the ms from the owner's recall of each of `samples` new messages until
    every real member's node has purged its body (SPEC §31.1)."""
    for _ in range(samples):
        sent = await owner.send(room, _BODY)
        target = sent.message_id
        for member in members:  # every member holds it before it is recalled
            while await member.get_event(target) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        started = time.perf_counter()
        recall = encode_recall(Recall(target=target))
        await owner.send(
            room, recall, content_type=RECALL_CONTENT_TYPE, kind=Kind.RECALL, acts_on=target
        )
        for member in members:
            while await member.get_event(target) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        took.append((time.perf_counter() - started) * 1000)


async def _fill(owner: Node, room: RoomId, absent: int) -> float:
    """Add `absent` members whose homes are away; returns the seconds it took."""
    started = time.perf_counter()
    for n in range(1, absent + 1):
        await owner.add_member(room, UserId(os.urandom(32)))
        if n % 64 == 0:  # progress, on a machine others load too
            print(f"{n} added, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return time.perf_counter() - started


def _members(quick: bool) -> int:
    members = int(os.environ.get(MEMBERS_ENV, 64 if quick else 256))
    if not REAL_NODES <= members <= MAX_MEMBERS:
        raise ValueError(f"a bench group has {REAL_NODES} to {MAX_MEMBERS} members")
    return members


async def _measure(quick: bool) -> dict[str, Any]:
    members = _members(quick)
    samples = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with AsyncExitStack() as stack:
            owner, *real, last = [
                await stack.enter_async_context(Node(_config(Path(tmp) / f"node{n}")))
                for n in range(REAL_NODES)
            ]
            room = await owner.create_group("bench", [])
            join_ms = await _join_ms(owner, real[0], room)
            for member in real[1:]:
                await _join_ms(owner, member, room)
            absent = members - REAL_NODES
            fill_s = await _fill(owner, room, absent)
            figures: dict[str, Any] = {
                "members": members,
                "real_nodes": REAL_NODES,
                "absent_member_homes": absent,
                "join_by_invite_ms": round(join_ms, 1),
                "add_member_mean_ms": round(fill_s * 1000 / max(1, absent), 1),
            }
            try:
                async with asyncio.timeout(_FULL_JOIN_S):
                    figures["join_by_invite_full_ms"] = round(await _join_ms(owner, last, room), 1)
            except TimeoutError:  # reported, not hidden: the sends below need the member
                return {**figures, "join_by_invite_full_ms": None, "timed_out_s": _FULL_JOIN_S}
            await asyncio.sleep(2.0)  # the room's gossip mesh forms on heartbeats (1 s)
            await _send_to(owner, last, room, 2)  # warm
            latencies = await _send_to(owner, last, room, samples)
            recalls, recalled = samples // 2, list[float]()
            with contextlib.suppress(TimeoutError):  # the share converged says so
                async with asyncio.timeout(_RECALL_S):
                    await _recall_ms(owner, [*real, last], room, recalls, recalled)
            return {
                **figures,
                "messages": samples,
                "send_to_last_member_p50_ms": round(percentile(latencies, 50), 1),
                "send_to_last_member_p99_ms": round(percentile(latencies, 99), 1),
                "recalls": recalls,
                "recall_converged_pct": round(100 * len(recalled) / recalls, 1),
                "recall_converged_p99_ms": (
                    round(percentile(recalled, 99), 1) if recalled else None
                ),
                "rss_mb": process_rss_mb(),
            }


def run(quick: bool) -> dict[str, Any]:
    """Figures for `hearthmesh bench group`."""
    tune_collector()
    return asyncio.run(_measure(quick))
