"""`KeyAhead` (node/e2ee/key_ahead.py, SPEC §27.10.3): what makes a room's key due to be shared
ahead, and that a burst of changes shares once. `share` records its calls; the supervisor, the
plan and the clock are the real ones (when the plan makes a room due: tests/protocol/
test_key_ahead_plan.py)."""

from __future__ import annotations

import asyncio

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.e2ee.key_ahead import KeyAhead
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.e2ee import AheadPlan, AheadPolicy
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import UserId

GROUP, OTHER = RoomId(b"g" * 32), RoomId(b"o" * 32)
BOB, STRANGER = UserId(b"b" * 32), UserId(b"s" * 32)
QUICK = AheadPolicy(quiet_ms=50, spread_ms=0)


async def test_a_burst_of_changes_shares_once_and_a_members_record_shares_again() -> None:
    shared: list[RoomId] = []
    done = asyncio.Event()

    async def share(room: RoomId) -> int:
        shared.append(room)
        done.set()
        return 1

    async with asyncio.timeout(5), Supervisor() as sup:
        ahead = KeyAhead(
            share=share,
            is_member=lambda room, user: room == GROUP and user == BOB,
            spawn=sup.spawn,
            plan=AheadPlan(QUICK, b"device"),
            now_ms=SystemClock().now_ms,
        )
        ahead.record_learnt(BOB)  # no room of his changed yet: nothing watched
        for _ in range(3):  # a formation: adds and records within the delay
            ahead.room_changed(GROUP)
            ahead.record_learnt(BOB)
        await done.wait()
        await asyncio.sleep(0.1)
        assert shared == [GROUP]
        done.clear()
        ahead.record_learnt(STRANGER)  # in no watched room
        ahead.room_changed(OTHER)
        await done.wait()
        ahead.record_learnt(BOB)  # a device of his linked: his room is due again
        await asyncio.sleep(0.1)
        assert shared == [GROUP, OTHER, GROUP]
        assert (ahead.rounds, ahead.shares) == (3, 3)
