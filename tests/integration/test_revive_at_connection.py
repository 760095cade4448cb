"""A home whose deliveries wait parked gets them as soon as it connects, not after its hello
(SPEC §11.5.2, §13.3), with real homes on 127.0.0.1 whose hellos (either way) the test holds:
at a 50-home group's formation the homes whose first batch found no address answering waited
for their hellos, 5-30 s under that load, before the creator sent them anything (SPEC §20.6).
"""

from __future__ import annotations

import asyncio

import pytest

from .conftest import NodeFactory, free_port, wait_until
from .test_gap_fetch import next_messages

pytestmark = pytest.mark.integration

PROBE_AWAY_MS = 6_000
"""How far off alice's next probe of bob is when he comes back: only his connection's report
can send her deliveries before it."""


async def test_a_parked_home_whose_record_is_held_gets_its_deliveries_before_its_hello_ends(
    make_node: NodeFactory, hellos: asyncio.Event
) -> None:
    async with asyncio.timeout(40):
        async with make_node("bob", listen_addrs=(f"/ip4/127.0.0.1/tcp/{free_port()}",)) as bob:
            bob_id, bob_record = bob.user_id, bob.home_record()
        # Probes back off past their default 5 s cap, so one falls far from bob's return.
        async with make_node("alice", outage_probe_max_ms=60_000) as alice:
            await alice.learn_home_record(bob_record)
            room = await alice.open_direct(bob_id)
            sent = await alice.send(room, b"while you were away")
            outbox, clock = alice._services.outbox, alice._clock
            await wait_until(lambda: len(outbox.unreachable) == 1)
            machine = outbox._machine
            # Its record's address no longer answers, so each probe fails at once.
            await wait_until(
                lambda: (machine.timer_ms() or 0) - clock.now_ms() >= PROBE_AWAY_MS, poll_s=0.05
            )
            hellos.clear()  # neither side's hello ends while the test looks
            # Elsewhere now, and invisible: a newer record in its presence would revive the
            # destination too (at the formation the homes' records were not newer).
            async with make_node(
                "bob", listen_addrs=(f"/ip4/127.0.0.1/tcp/{free_port()}",), share_presence=False
            ) as bob:
                arriving = asyncio.ensure_future(next_messages(bob.events(), 1))
                await bob._host.connect(alice.listen_addrs[0], retry_now=True)
                async with asyncio.timeout(PROBE_AWAY_MS / 2 / 1000):  # before that probe
                    received = await arriving
                assert [envelope.message_id for envelope in received] == [sent.message_id]
                hellos.set()
