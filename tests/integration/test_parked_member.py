"""A member parked for want of a record gets the group once its home is known (SPEC §11.5.2,
§13.5), whoever else was waiting on its home's lookup.

A 50-node group's creator parked five real members' welcomes at the create (their hellos had
not come through yet) and kept them parked for good, though hellos taught it their records
within a minute: the outbox's probe of each shared a lookup that a room key's sender owned and
gave up on after its 3 s, and that cancelled the lookup for every caller, the probe with it, so
the member stayed "being probed" and was never probed again (SPEC §20.6).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from hearthmesh.protocol.identity import UserId

from .conftest import NodeFactory, wait_until

pytestmark = pytest.mark.integration


async def test_a_parked_member_whose_lookup_a_bounded_caller_gave_up_gets_the_group(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(60), AsyncExitStack() as stack:
        alice = await stack.enter_async_context(make_node("alice"))
        late = await stack.enter_async_context(make_node("late"))
        lookups = alice._services.home_lookups
        # The DHT walk on a loaded mesh: longer than a bounded caller waits (held until released).
        released = asyncio.Event()
        walk = lookups._lookup

        async def slow_walk(user: UserId) -> bool:
            await released.wait()
            return await walk(user)

        lookups._lookup = slow_walk
        asked_by: list[str] = []
        find = lookups.find

        async def noting_find(user: UserId, *, live: bool = True) -> bool:
            task = asyncio.current_task()
            asked_by.append("" if task is None else task.get_coro().__qualname__)  # type: ignore[union-attr]
            return await find(user, live=live)

        lookups.find = noting_find  # type: ignore[method-assign]
        # A caller with a bound of its own (a room key's sender: 3 s) asks first: it owns the walk.
        bounded = asyncio.create_task(lookups.find(late.user_id))
        group = await alice.create_group("hearth", [])
        await alice.add_members(group, [late.user_id])
        # no record names late's home: its welcome is parked, and its probe shares the walk
        await wait_until(lambda: "OutboxWorker._probe_unknown" in asked_by)
        bounded.cancel()  # its bound ran out
        released.set()
        # late's home connects: the hello teaches alice its record, which probes it at once
        await late.connect(alice.listen_addrs[0])
        await wait_until(lambda: late.user_id not in alice._services.outbox.unreachable)
        while group not in await late.rooms():  # noqa: ASYNC110 - a store read, no event
            await asyncio.sleep(0.05)
        assert await late.members(group) == {alice.user_id, late.user_id}
