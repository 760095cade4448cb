"""The flooder of `hearthmesh bench hostile`, run in a process of its own (#12).

A real attacker floods from its own machine: its CPU is not the honest clients'. Run inside
the bench process, the flooder's libp2p hosts (a new identity each time it is cut off, each with
a Noise handshake) would share one GIL with the clients that time the honest messages, and the
honest latency would measure the bench, not the victim. `python -m hearthmesh.tools.bench.flooder
ORDERS_JSON` floods as ordered and prints its figures as one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, BatchItem
from hearthmesh.protocol.identity import UserId, decode_user_id
from hearthmesh.protocol.membership import Action
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.hostile.forge import random_room
from hearthmesh.tools.hostile.peer import HostilePeer
from hearthmesh.tools.hostile.pipe import DeliverPipe, deliver_pipe

__all__ = ["FLOOD_BATCH", "FloodOrders", "Flooder", "main"]

FLOOD_BATCH: Final = 10
"""Envelopes per DELIVER frame of the flood."""
WARM_IDENTITIES: Final = 3
"""Identities started and connected ahead of their turn (a ban then costs no start-up)."""
HOLD_EVERY_S: Final = 0.5
HELD_FRAME_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class FloodOrders:
    """What the bench asks of the flooder process (passed as JSON on its command line)."""

    target_peer: str
    target_addr: str
    victim: str
    contact: str
    rate_per_s: float
    duration_s: float
    dial_from: str | None = None
    """The IP address the flood comes from (None: the system's choice)."""


@dataclass(slots=True)
class Flooder:
    """Floods one node with invalid and unauthorized envelopes; comes back when cut off."""

    target_peer: str
    target_addr: str
    victim: UserId
    contact: UserId
    dial_from: str | None = None
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
            kit = HostilePeer(answer_s=2.0, dial_from=self.dial_from)
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


async def _flood(orders: FloodOrders) -> dict[str, Any]:
    flooder = Flooder(
        target_peer=orders.target_peer,
        target_addr=orders.target_addr,
        victim=decode_user_id(orders.victim),
        contact=decode_user_id(orders.contact),
        dial_from=orders.dial_from,
    )
    await flooder.run(orders.rate_per_s, orders.duration_s)
    return {
        "banned_after_s": flooder.banned_after_s,
        "identities": flooder.identities,
        "sent": flooder.frames * FLOOD_BATCH,
        "outcomes": dict(flooder.outcomes.most_common()),
        "streams_held": flooder.held,
    }


def orders_argument(orders: FloodOrders) -> str:
    """The command-line argument that carries `orders` to the flooder process."""
    return json.dumps(asdict(orders))


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    orders = FloodOrders(**json.loads(argv[0]))
    print(json.dumps(asyncio.run(_flood(orders))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
