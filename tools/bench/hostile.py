"""`hearthmesh bench hostile`: a steady chat while a stranger floods the receiving node (#12).

Two home nodes, alice's and bob's, each a `hearthmesh run` process on 127.0.0.1; their clients
live in this process. Alice's client sends to bob at a steady rate (`RATE_PER_S`) for a fixed
time, once in peace and once while a `HostilePeer` floods bob's node with `FLOOD_FACTOR` times
that rate of invalid envelopes (bad signatures, unknown kinds, oversized membership bodies) and
unauthorized ones (a stranger's membership events in alice and bob's room and in groups, relay
requests for random recipients), plus a held stream (a partial frame) every `HOLD_EVERY_S`.
When bob's node cuts the flooder off it comes back under a new peer id, as a real one would.

Figures: `honest_lost` (messages durable at alice, acked to her client, that never reached
bob's client; must be 0), honest p50/p99 with and without the flood and their ratio (target
<= 2), `victim_rss_growth_mb` over the flood (target <= 50), `flooder_banned_after_s` (first
cut-off; null if never), and the attacker's sends by outcome.

`SteadyChat` and `home_pair` are shared with the soak test (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, BatchItem
from hearthmesh.protocol.identity import UserId, decode_user_id
from hearthmesh.protocol.membership import Action
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.bench.stats import percentile, process_rss_mb
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.hostile.forge import random_room
from hearthmesh.tools.hostile.peer import HostilePeer
from hearthmesh.tools.hostile.pipe import DeliverPipe, deliver_pipe
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = ["FLOOD_FACTOR", "RATE_PER_S", "HomePair", "SteadyChat", "home_pair", "run"]

RATE_PER_S: Final = 50
FLOOD_FACTOR: Final = 10
FLOOD_BATCH: Final = 10
"""Envelopes per DELIVER frame of the flood."""
WARM_IDENTITIES: Final = 3
"""Identities started and connected ahead of their turn (a ban then costs no start-up)."""
HOLD_EVERY_S: Final = 0.5
HELD_FRAME_BYTES: Final = 256 * 1024
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
async def home_pair(tmp: Path) -> AsyncIterator[HomePair]:
    """Start both home processes, connect them and open their conversation; stop both after."""
    async with AsyncExitStack() as stack:
        alice, bob = await asyncio.gather(
            spawn_home(tmp / "alice", name="alice"), spawn_home(tmp / "bob", name="bob")
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

    async def send(
        self,
        room: str,
        *,
        tag: str,
        rate_per_s: float,
        duration_s: float,
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        """Send `rate_per_s` messages a second for `duration_s` (or until `until()`), each
        with client id and text `tag-<i>`."""
        count = int(rate_per_s * duration_s)

        async def one(i: int) -> bool:
            if until():
                return False
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


@dataclass(slots=True)
class Flooder:
    """Floods one node with invalid and unauthorized envelopes; comes back when cut off."""

    target_peer: str
    target_addr: str
    victim: UserId
    contact: UserId
    outcomes: Counter[str] = field(default_factory=Counter)
    identities: int = 0
    held: int = 0
    banned_after_s: float | None = None
    frames: int = 0
    """DELIVER frames sent, over all identities: frame i carries kind i % 6."""
    _started: float = 0.0

    async def run(self, rate_per_s: float, duration_s: float) -> None:
        """Flood for `duration_s`, identity after identity: while one floods, the next one
        starts its host and connects, so a ban costs the attacker little time."""
        self._started = time.perf_counter()
        deadline = self._started + duration_s
        async with asyncio.TaskGroup() as group:
            turns = [asyncio.Event()]  # turns[k] set: identity k may flood
            turns[0].set()
            kit = HostilePeer(answer_s=2.0)
            flooding = 0
            while time.perf_counter() < deadline:
                while len(turns) <= flooding + WARM_IDENTITIES:
                    turns.append(asyncio.Event())
                    group.create_task(
                        self._identity(kit, turns[-2], turns[-1], rate_per_s, deadline)
                    )
                    kit = kit.rotated()
                await turns[flooding + 1].wait()  # identity `flooding` was cut off
                flooding += 1

    async def _identity(
        self,
        kit: HostilePeer,
        turn: asyncio.Event,
        after: asyncio.Event,
        rate_per_s: float,
        deadline: float,
    ) -> None:
        """Start, connect, wait for our turn, flood until cut off; then pass the turn on."""
        try:
            async with kit:
                try:
                    await kit.connect(self.target_addr)
                except P2PError:
                    self.outcomes["connect-failed"] += 1
                    await turn.wait()
                    await asyncio.sleep(HOLD_EVERY_S)  # the target may be down: slow down
                    return
                await turn.wait()
                if time.perf_counter() >= deadline:
                    return
                self.identities += 1
                async with asyncio.TaskGroup() as group:
                    holder = group.create_task(self._hold(kit, deadline))
                    await self._flood(kit, rate_per_s, deadline)
                    holder.cancel()
                after.set()  # before our host's stop, which takes a while
        finally:
            after.set()

    async def _flood(self, kit: HostilePeer, rate_per_s: float, deadline: float) -> None:
        """Until the deadline or until this identity is cut off, without waiting for acks;
        a stream the target closes without a ban (a handler that failed) is opened again."""
        while time.perf_counter() < deadline:
            pipe: DeliverPipe | None = None
            try:
                async with deliver_pipe(kit, self.target_peer) as opened:
                    pipe = opened
                    frames = int((deadline - time.perf_counter()) * rate_per_s / FLOOD_BATCH) + 1

                    async def send(_: int) -> bool:
                        if time.perf_counter() >= deadline:
                            return False
                        self.frames += 1
                        return await opened.send(self._batch(kit, self.frames))

                    await kit.flood(rate_per_s / FLOOD_BATCH, frames, send)
                    with contextlib.suppress(TimeoutError):  # the last acks, if they come
                        async with asyncio.timeout(1.0):
                            await opened.wait_answered()
            except P2PError:
                self.outcomes["stream-refused"] += 1
            if pipe is not None:
                self.outcomes.update(pipe.outcomes)
            if await self._banned(kit):
                if self.banned_after_s is None:
                    self.banned_after_s = round(time.perf_counter() - self._started, 2)
                return

    async def _banned(self, kit: HostilePeer) -> bool:
        """A failed frame is a ban if even a plain hello goes unanswered (else a crash)."""
        return (await kit.announce_home(self.target_peer)).frame is None

    def _batch(self, kit: HostilePeer, i: int) -> list[BatchItem]:
        """Frame `i` of the flood: ten of one kind of bad envelope, the kinds in turn."""
        now, forge, rng, me = kit.now_ms(), kit.forge, kit.rng, kit.user_id
        direct = direct_room_id(self.victim, self.contact)
        recipient: bytes = self.victim
        wires: list[bytes] = []
        for _ in range(FLOOD_BATCH):
            room = random_room(rng)
            match i % 6:
                case 0:
                    wires.append(forge.bad_signature(room, now_ms=now))
                case 1:
                    wires.append(forge.unknown_kind(room, now_ms=now))
                case 2:
                    wires.append(forge.oversized_membership(room, now_ms=now).wire)
                case 3:  # a stranger's membership event in alice and bob's room
                    wires.append(forge.membership(direct, Action.LEAVE, me, now_ms=now).wire)
                case 4:  # a non-member adding itself to a group
                    wires.append(forge.membership(room, Action.ADD, me, now_ms=now).wire)
                case _:  # relay requests for random recipients
                    recipient = rng(32)
                    wires.append(forge.message(room, "r" * 200, now_ms=now).wire)
        return [BatchItem(0, recipient, wire) for wire in wires]

    async def _hold(self, kit: HostilePeer, deadline: float) -> None:
        """One more stream inside a partial frame every HOLD_EVERY_S, all held to the end."""
        async with AsyncExitStack() as stack:
            while time.perf_counter() < deadline:
                held = await stack.enter_async_context(
                    kit.hold_streams(
                        self.target_peer,
                        DELIVER_PROTOCOL,
                        1,
                        declared=HELD_FRAME_BYTES,
                        sent=HELD_FRAME_BYTES - 1,
                    )
                )
                self.held += held.opened
                await asyncio.sleep(HOLD_EVERY_S)


async def _phase(
    pair: HomePair, chat: SteadyChat, tag: str, duration_s: float, flooder: Flooder | None
) -> None:
    async with asyncio.TaskGroup() as group:
        if flooder is not None:
            group.create_task(flooder.run(RATE_PER_S * FLOOD_FACTOR, duration_s))
        await chat.send(pair.room, tag=tag, rate_per_s=RATE_PER_S, duration_s=duration_s)
    await chat.settle(tag)


async def _bench(quick: bool) -> dict[str, Any]:
    duration_s = 5.0 if quick else 20.0
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-hostile-") as tmp:
        async with (
            home_pair(Path(tmp)) as pair,
            pair.alice_api.websocket() as alice_ws,
            pair.bob_api.websocket() as bob_ws,
            asyncio.TaskGroup() as readers,
        ):
            chat = SteadyChat(alice_ws, bob_ws)
            tasks = [readers.create_task(chat.read_alice()), readers.create_task(chat.read_bob())]
            await _phase(pair, chat, "warm", 1.0, None)
            await _phase(pair, chat, "calm", duration_s, None)
            rss_before = process_rss_mb(pair.bob.process.pid)
            flooder = Flooder(
                target_peer=pair.bob_peer,
                target_addr=pair.bob.addr,
                victim=pair.bob_user,
                contact=pair.alice_user,
            )
            try:
                await _phase(pair, chat, "flood", duration_s, flooder)
            except* Exception as group_error:  # the victim died under us: report it
                chat.errors.append(repr(group_error.exceptions[0]))
            victim_up = pair.bob_up()
            rss_after = process_rss_mb(pair.bob.process.pid) if victim_up else None
            for task in tasks:
                task.cancel()
    return _figures(chat, flooder, duration_s, rss_before, rss_after, victim_up)


def _figures(
    chat: SteadyChat,
    flooder: Flooder,
    duration_s: float,
    rss_before: float,
    rss_after: float | None,
    victim_up: bool,
) -> dict[str, Any]:
    calm, flood = chat.figures("calm"), chat.figures("flood")
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
        "flooder_banned_after_s": flooder.banned_after_s,
        "flooder_identities": flooder.identities,
        "attacker_sent": flooder.frames * FLOOD_BATCH,
        "attacker_rate_per_s": round(flooder.frames * FLOOD_BATCH / duration_s, 1),
        "attacker_outcomes": dict(flooder.outcomes.most_common()),
        "attacker_streams_held": flooder.held,
        "chat_errors": chat.errors[:5],
        "layout": "alice's and bob's nodes each a `hearthmesh run` process; the clients and "
        "the flooder (its own libp2p host) in the bench process; the flood targets bob's node",
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the hostile benchmark (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick))
