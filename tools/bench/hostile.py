"""`hearthmesh bench hostile`: a steady chat while a stranger floods the receiving node (#12).

Two home nodes, alice's and bob's, each a `hearthmesh run` process on 127.0.0.1; their clients
live in this process, the flooder in one of its own (tools/bench/flooder.py says why). Alice's
client sends to bob at a steady rate (`RATE_PER_S`) for a fixed time, once in peace and once
while a `HostilePeer` floods bob's node with `FLOOD_FACTOR` times that rate of invalid envelopes
(bad signatures, unknown kinds, oversized membership bodies) and unauthorized ones (a
stranger's membership events in alice and bob's room and in groups, relay requests for random
recipients), plus a held stream (a partial frame) every half second. When bob's node cuts the
flooder off it comes back under a new peer id, as a real one would.

Two variants. `bench hostile`: the flooder dials from its own address, `FLOOD_FROM`
(127.0.1.1: another /24 than alice's node on 127.0.0.1, so one attacker on a network of its
own, never on the victim's loopback), and bob's node counts loopback peers against their
address prefix (`--no-prefix-exempt-loopback`), as it would count an attacker's machine on the
internet (SPEC §11.6.5-6): its fresh identities meet the prefix cap and ban.
`bench hostile-tunnel`: the flooder arrives through a loopback tunnel, which a node exempts from
prefix counting by default, so only per-peer standing stops each fresh identity: the worst case
for the honest chat.

Figures: `honest_lost` (messages durable at alice, acked to her client, that never reached
bob's client; must be 0), honest p50/p99 with and without the flood and their ratio (target
<= 2), `victim_rss_growth_mb` over the flood (target <= 50), `flooder_banned_after_s` (first
cut-off; null if never), and the attacker's sends by outcome.

To see where the victim's time goes, sample bob's process (`hearthmesh run ... --name bob`)
during the flood phase, which starts with the flooder process; py-spy is a dev dependency:
`py-spy record -p <bob's pid> -d 18 -r 50 --threads --idle -f raw -o out.txt`.

`SteadyChat` and `home_pair` are shared with the soak test (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from hearthmesh.protocol.identity import UserId, decode_user_id
from hearthmesh.tools.bench.flooder import FloodOrders, orders_argument
from hearthmesh.tools.bench.stats import percentile, process_rss_mb
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.hostile.peer import HostilePeer
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = [
    "FLOOD_FACTOR",
    "RATE_PER_S",
    "HomePair",
    "SteadyChat",
    "home_pair",
    "run",
    "run_tunnel",
]

FLOOD_FROM: Final = "127.0.1.1"
"""Where `bench hostile`'s flood comes from: another /24 than alice's node (127.0.0.1)."""
RATE_PER_S: Final = 50
FLOOD_FACTOR: Final = 10
SETTLE_S: Final = 10.0
"""How long after the last send a message may take to arrive before it counts as lost."""


@dataclass(frozen=True, slots=True)
class HomePair:
    """Alice's and bob's home nodes, connected, with their direct room open on both."""

    alice: HomeProcess
    bob: HomeProcess
    alice_api: ApiClient
    bob_api: ApiClient
    room: str
    """The direct room id (hex)."""

    @property
    def alice_user(self) -> UserId:
        return decode_user_id(self.alice.user_text)

    @property
    def bob_user(self) -> UserId:
        return decode_user_id(self.bob.user_text)

    @property
    def bob_peer(self) -> str:
        return self.bob.addr.rsplit("/p2p/", 1)[1]

    def bob_up(self) -> bool:
        return self.bob.process.returncode is None


@asynccontextmanager
async def home_pair(tmp: Path, *, bob_flags: tuple[str, ...] = ()) -> AsyncIterator[HomePair]:
    """Start both home processes, connect them and open their conversation; stop both after."""
    async with AsyncExitStack() as stack:
        alice, bob = await asyncio.gather(
            spawn_home(tmp / "alice", name="alice"),
            spawn_home(tmp / "bob", name="bob", flags=bob_flags),
        )
        for process in (alice, bob):
            stack.push_async_callback(_stop, process)
        alice_api = await stack.enter_async_context(ApiClient(alice.api, alice.token))
        bob_api = await stack.enter_async_context(ApiClient(bob.api, bob.token))
        await alice_api.call("POST", "/v1/peers", {"address": bob.addr})
        opened = await alice_api.call("POST", "/v1/conversation", {"recipient_id": bob.user_text})
        await bob_api.call("POST", "/v1/conversation", {"recipient_id": alice.user_text})
        yield HomePair(
            alice=alice, bob=bob, alice_api=alice_api, bob_api=bob_api, room=opened["room_id"]
        )


async def _stop(process: HomeProcess) -> None:
    if process.process.returncode is None:
        await process.terminate()


@dataclass(slots=True)
class _Sent:
    at: float
    message_id: str | None = None


class SteadyChat:
    """Alice's client sends to bob's; records acks (`message_sent`) and arrivals at bob."""

    def __init__(
        self, alice_ws: aiohttp.ClientWebSocketResponse, bob_ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self._alice = alice_ws
        self._bob = bob_ws
        self.sent: dict[str, _Sent] = {}
        """By client id."""
        self.arrived: dict[str, float] = {}
        """Message id → when bob's client saw it."""
        self.arrivals: list[str] = []
        """Message ids in the order bob's client saw them (duplicates kept)."""
        self.errors: list[str] = []
        self._changed = asyncio.Event()

    async def read_alice(self) -> None:
        async for message in self._alice:
            frame = json.loads(message.data)
            if frame["event"] == "message_sent":
                self.sent[frame["client_id"]].message_id = frame["message_id"]
            elif frame["event"] == "error":
                self.errors.append(str(frame))
            self._changed.set()

    async def read_bob(self) -> None:
        async for message in self._bob:
            frame = json.loads(message.data)
            if frame["event"] == "message":
                self.arrived.setdefault(frame["message_id"], time.perf_counter())
                self.arrivals.append(frame["message_id"])
                self._changed.set()

    async def send(self, room: str, *, tag: str, rate_per_s: float, duration_s: float) -> None:
        """Send `rate_per_s` messages a second for `duration_s`, each with client id and text
        `tag-<i>`."""
        count = int(rate_per_s * duration_s)

        async def one(i: int) -> bool:
            client_id = f"{tag}-{i}"
            self.sent[client_id] = _Sent(at=time.perf_counter())
            frame = {"event": "send", "room_id": room, "message": client_id, "client_id": client_id}
            try:
                await self._alice.send_str(json.dumps(frame))
            except aiohttp.ClientError as exc:  # alice's node went away: the figures say so
                self.errors.append(f"alice's connection: {exc!r}")
                return False
            return True

        await HostilePeer.flood(rate_per_s, count, one)

    def client_ids(self, tag: str) -> list[str]:
        """Client ids of `tag` in the order they were sent."""
        return [c for c in self.sent if c.startswith(f"{tag}-")]

    def acked(self, tag: str) -> dict[str, _Sent]:
        """Messages of `tag` durable at alice (her client got `message_sent`)."""
        return {c: s for c, s in self.sent.items() if c.startswith(f"{tag}-") and s.message_id}

    def missing(self, tag: str) -> list[str]:
        """Message ids acked to alice's client that bob's client has not seen."""
        ids = [s.message_id for s in self.acked(tag).values() if s.message_id is not None]
        return [m for m in ids if m not in self.arrived]

    async def settle(self, tag: str, *, grace_s: float = SETTLE_S) -> None:
        """Wait until every message of `tag` is acked and arrived, or `grace_s` passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self.missing(tag) or len(self.acked(tag)) < self._count(tag):
                    self._changed.clear()
                    await self._changed.wait()

    def _count(self, tag: str) -> int:
        return len(self.client_ids(tag))

    def latencies_ms(self, tag: str) -> list[float]:
        return [
            (self.arrived[s.message_id] - s.at) * 1000
            for s in self.acked(tag).values()
            if s.message_id is not None and s.message_id in self.arrived
        ]

    def figures(self, tag: str) -> dict[str, Any]:
        latencies = self.latencies_ms(tag) or [float("nan")]
        return {
            "sent": self._count(tag),
            "acked": len(self.acked(tag)),
            "lost": len(self.missing(tag)),
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
        }


async def _flood_elsewhere(orders: FloodOrders) -> dict[str, Any]:
    """Run the flooder in its own process (tools/bench/flooder.py says why); its figures."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hearthmesh.tools.bench.flooder",
        orders_argument(orders),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the flooder process failed with exit code {process.returncode}")
    figures: dict[str, Any] = json.loads(out)
    return figures


async def _phase(
    pair: HomePair, chat: SteadyChat, tag: str, duration_s: float, orders: FloodOrders | None
) -> dict[str, Any]:
    """Chat for `duration_s` (flooded as `orders` say, if any); the flooder's figures."""
    async with asyncio.TaskGroup() as group:
        flood = None if orders is None else group.create_task(_flood_elsewhere(orders))
        await chat.send(pair.room, tag=tag, rate_per_s=RATE_PER_S, duration_s=duration_s)
    await chat.settle(tag)
    return {} if flood is None else flood.result()


async def _bench(quick: bool, *, tunnel: bool) -> dict[str, Any]:
    duration_s = 5.0 if quick else 20.0
    flooded: dict[str, Any] = {}
    # Everything runs on 127.0.0.1. Without a tunnel, bob's node counts loopback peers against
    # their address prefix, as it counts a flooder's own machine on the internet; through a
    # tunnel (the default of a node, SPEC §11.6.5) no flooder identity ever meets a prefix cap.
    bob_flags = () if tunnel else ("--no-prefix-exempt-loopback",)
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-hostile-") as tmp:
        async with (
            home_pair(Path(tmp), bob_flags=bob_flags) as pair,
            pair.alice_api.websocket() as alice_ws,
            pair.bob_api.websocket() as bob_ws,
            asyncio.TaskGroup() as readers,
        ):
            chat = SteadyChat(alice_ws, bob_ws)
            tasks = [readers.create_task(chat.read_alice()), readers.create_task(chat.read_bob())]
            await _phase(pair, chat, "warm", 1.0, None)
            await _phase(pair, chat, "calm", duration_s, None)
            rss_before = process_rss_mb(pair.bob.process.pid)
            orders = FloodOrders(
                target_peer=pair.bob_peer,
                target_addr=pair.bob.addr,
                victim=pair.bob.user_text,
                contact=pair.alice.user_text,
                rate_per_s=RATE_PER_S * FLOOD_FACTOR,
                duration_s=duration_s,
                dial_from=None if tunnel else FLOOD_FROM,
            )
            try:
                flooded = await _phase(pair, chat, "flood", duration_s, orders)
            except* Exception as group_error:  # the victim died under us: report it
                chat.errors.append(repr(group_error.exceptions[0]))
            victim_up = pair.bob_up()
            rss_after = process_rss_mb(pair.bob.process.pid) if victim_up else None
            for task in tasks:
                task.cancel()
    return {
        "flooder_through": "a loopback tunnel" if tunnel else f"its own address, {FLOOD_FROM}",
        **_figures(chat, flooded, duration_s, rss_before, rss_after, victim_up),
    }


def _figures(
    chat: SteadyChat,
    flooded: dict[str, Any],
    duration_s: float,
    rss_before: float,
    rss_after: float | None,
    victim_up: bool,
) -> dict[str, Any]:
    calm, flood = chat.figures("calm"), chat.figures("flood")
    sent = flooded.get("sent", 0)
    return {
        "rate_per_s": RATE_PER_S,
        "duration_s": duration_s,
        "flood_rate_per_s": RATE_PER_S * FLOOD_FACTOR,
        "honest_sent": flood["sent"],
        "honest_acked": flood["acked"],
        "honest_lost": flood["lost"],
        "honest_latency_samples": flood["acked"] - flood["lost"],
        "honest_p50_ms": flood["p50_ms"],
        "honest_p99_ms": flood["p99_ms"],
        "calm_lost": calm["lost"],
        "calm_p50_ms": calm["p50_ms"],
        "calm_p99_ms": calm["p99_ms"],
        "p99_ratio": round(flood["p99_ms"] / calm["p99_ms"], 2),
        "victim_rss_before_mb": rss_before,
        "victim_rss_growth_mb": None if rss_after is None else round(rss_after - rss_before, 1),
        "victim_up_at_end": victim_up,
        "flooder_banned_after_s": flooded.get("banned_after_s"),
        "flooder_identities": flooded.get("identities"),
        "attacker_sent": sent,
        "attacker_rate_per_s": round(sent / duration_s, 1),
        "attacker_outcomes": flooded.get("outcomes", {}),
        "attacker_streams_held": flooded.get("streams_held"),
        "chat_errors": chat.errors[:5],
        "layout": "alice's and bob's nodes each a `hearthmesh run` process, the clients in the "
        "bench process, the flooder (a new libp2p host per identity) in a process of its own; "
        "the flood targets bob's node",
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the hostile benchmark (see the module docstring): the flooder connects from
    its own address, so its identities count against its address prefix."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick, tunnel=False))


def run_tunnel(quick: bool) -> dict[str, Any]:
    """`bench hostile-tunnel`: the same, with the flooder behind a loopback tunnel (a Tor onion
    service, an SSH forward), where no address prefix caps its identities; only per-peer
    standing stops each one."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick, tunnel=True))
