"""Background work asks member homes' capabilities a few at a time, and a user's send never
waits for a slot (SPEC §20.7, §27.10.3), with real homes on 127.0.0.1: bob's round shared
ahead asks carol's and dave's homes, whose capability answers and hellos (either way) the test
holds, one at a time; bob's send meanwhile asks the one still queued at once, and the round
takes that answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from hearthmesh.node.mesh.capabilities import CapabilityServer
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.e2ee import AheadPolicy

from .conftest import NodeFactory, wait_until

pytestmark = pytest.mark.integration


async def test_a_rounds_asks_go_one_at_a_time_and_a_send_asks_at_once(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: dict[object, asyncio.Event] = {}  # by a home's server or peer id: its answers wait
    serve, greet = CapabilityServer.serve, HelloService._answer

    async def held_serve(self: CapabilityServer, stream: FrameStream) -> None:
        if (gate := held.get(id(self))) is not None:
            await gate.wait()
        await serve(self, stream)

    async def held_greet(self: HelloService, stream: FrameStream, *, with_levels: bool) -> None:
        # A hello tells the levels (SPEC §20.7.1): held like an answer, whichever side greets.
        gate = held.get(id(self)) or held.get(stream.remote_peer)
        if gate is not None:
            await gate.wait()
        await greet(self, stream, with_levels=with_levels)

    monkeypatch.setattr(CapabilityServer, "serve", held_serve)
    monkeypatch.setattr(HelloService, "_answer", held_greet)
    async with (
        asyncio.timeout(30),
        make_node("bob", key_ahead=AheadPolicy(asks_at_once=1)) as bob,
        make_node("carol") as carol,
        make_node("dave") as dave,
    ):
        gates = {}
        for home in (carol, dave):
            await bob.learn_home_record(home.home_record())  # not connected: each ask dials
            gate = gates[home.peer_id] = held[home.peer_id] = asyncio.Event()
            held[id(home._services.capabilities)] = held[id(home._services.hello)] = gate
        levels, revisions = bob._services.peer_levels, bob._services.revisions
        on_wire: set[str] = set()
        asked: Counter[str] = Counter()
        most = 0
        ask = levels._ask

        async def counted(peer_id: str, addresses: tuple[str, ...]) -> None:
            nonlocal most
            on_wire.add(peer_id)
            asked[peer_id] += 1
            most = max(most, len(on_wire))
            try:
                await ask(peer_id, addresses)
            finally:
                on_wire.discard(peer_id)

        monkeypatch.setattr(levels, "_ask", counted)
        users = {carol.peer_id: carol.user_id, dave.peer_id: dave.user_id}
        level = Level.ADDRESSED_ROOM_KEYS
        rounds = asyncio.ensure_future(
            revisions.speakers(set(users.values()), level, background=True)
        )
        await wait_until(lambda: bool(on_wire))
        assert len(on_wire) == 1  # the other waits for the one slot
        (first,) = on_wire
        (second,) = set(users) - {first}
        send = asyncio.ensure_future(revisions.speakers({users[second]}, level))
        await wait_until(lambda: on_wire == {first, second})  # not behind the round's slot
        for gate in gates.values():
            gate.set()
        assert await send == {users[second]}
        assert await rounds == set(users.values())
        assert most == 2 and asked == {first: 1, second: 1}  # the round took the send's answer
        assert levels.of(first) == levels.of(second) == carol._services.capabilities.levels
