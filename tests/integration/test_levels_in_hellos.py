"""A home of this release is never asked its levels: its hello on each connection tells them
(SPEC §20.7.1), with real homes on 127.0.0.1 whose hellos (either way) the test holds. What a
home told stands across its reconnections until its new hello replaces it; a send to a home
that never told waits for its hello on its way rather than opening a caps stream beside it;
but a home it had to dial to ask is asked on caps/0 at once, its hello heavier on a loaded home;
and a home whose hello did not end in time is not waited on again for a while, however often
it connects: at a 50-home group's formation each new connection made the creator ask again,
and each of its first ADDs waited 12-13 s (SPEC §20.6).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from hearthmesh.node.mesh.capabilities import OUR_LEVELS
from hearthmesh.node.node import Node
from hearthmesh.protocol.capabilities import CAPS_PROTOCOL, Level

from .conftest import NodeFactory, live_connections, wait_until

pytestmark = pytest.mark.integration

LEVEL = Level.ADDRESSED_RECEIPTS


def _caps_opened(node: Node) -> int:
    opens: int = node._host.wire()["opens"].get(CAPS_PROTOCOL, 0)
    return opens


async def _reconnect(alice: Node, bob: Node) -> None:
    """Close alice's connections to bob and dial him again (no hello awaited): the new one's
    report has reached alice once its meeting started. Bob holds alice's record (from her
    hello) and may dial her back while hers close: that connection is closed too, until they
    are apart (a poll of alice's peers alone could miss the moment, seen in CI, and a
    connection bob opened before hers closed started no meeting)."""
    met = alice._services.greetings.started
    while old := live_connections(alice._host, bob.peer_id):
        await alice._host.disconnect(bob.peer_id)
        await wait_until(lambda: all(conn.is_closed for conn in old))
    await alice._host.connect(bob.listen_addrs[0], retry_now=True)
    await wait_until(lambda: alice._services.greetings.started > met)


async def test_a_reconnected_home_is_not_asked_what_it_told_stands_until_its_hello(
    make_node: NodeFactory, hellos: asyncio.Event
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        await alice.learn_home_record(bob.home_record())
        levels = alice._services.peer_levels
        await wait_until(lambda: levels.of(bob.peer_id) == OUR_LEVELS)
        hellos.clear()
        await _reconnect(alice, bob)
        assert levels.of(bob.peer_id) == OUR_LEVELS and not levels.due(bob.peer_id)
        assert await alice._services.revisions.speak({bob.user_id}, LEVEL)
        assert _caps_opened(alice) == 0  # neither asked nor waiting on the held hello
        assert alice.capability_asks() == {"asked": 0, "unanswered": 0, "hellos": 0}
        hellos.set()


async def test_a_send_to_a_home_that_never_told_waits_for_its_hello_not_a_caps_stream(
    make_node: NodeFactory, hellos: asyncio.Event
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        await alice.learn_home_record(bob.home_record())
        hellos.clear()
        await alice._host.connect(bob.listen_addrs[0], retry_now=True)
        await wait_until(lambda: alice._services.greetings.started > 0)
        send = asyncio.ensure_future(alice._services.revisions.speak({bob.user_id}, LEVEL))
        await asyncio.sleep(0)  # the send's ask has started
        hellos.set()
        assert await send
        assert alice._services.peer_levels.of(bob.peer_id) == OUR_LEVELS
        assert _caps_opened(alice) == 0
        assert alice.capability_asks() == {"asked": 0, "unanswered": 0, "hellos": 1}


async def test_a_home_dialled_to_ask_it_is_asked_at_once_not_waited_on_for_its_hello(
    make_node: NodeFactory, hellos: asyncio.Event
) -> None:
    async with (
        asyncio.timeout(30),
        make_node("alice", capability_ask_ms=5_000) as alice,
        make_node("bob") as bob,
    ):
        await alice.learn_home_record(bob.home_record())  # not connected: the ask dials it
        hellos.clear()  # its hello (either way) would not end within the ask's bound
        assert await alice._services.revisions.speak({bob.user_id}, LEVEL)
        assert alice._services.peer_levels.of(bob.peer_id) == OUR_LEVELS  # answered, not skipped
        assert _caps_opened(alice) == 1
        assert alice.capability_asks() == {"asked": 1, "unanswered": 0, "hellos": 0}
        hellos.set()


async def test_a_home_whose_hello_did_not_end_in_time_is_not_waited_on_as_it_reconnects(
    make_node: NodeFactory, hellos: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        asyncio.timeout(30),
        make_node("alice", capability_ask_ms=300) as alice,
        make_node("bob") as bob,
    ):
        await alice.learn_home_record(bob.home_record())
        levels, revisions = alice._services.peer_levels, alice._services.revisions
        asked: Counter[str] = Counter()
        ask = levels._ask

        async def counted(peer_id: str, addresses: tuple[str, ...]) -> None:
            asked[peer_id] += 1
            await ask(peer_id, addresses)

        monkeypatch.setattr(levels, "_ask", counted)
        hellos.clear()
        await alice._host.connect(bob.listen_addrs[0], retry_now=True)
        await wait_until(lambda: alice._services.greetings.started > 0)
        assert await revisions.speak({bob.user_id}, LEVEL)  # its hello not in time: not counted
        assert asked == {bob.peer_id: 1} and levels.of(bob.peer_id) is None
        for _ in range(2):  # the connection comes and goes, its hellos still held
            await _reconnect(alice, bob)
            assert await revisions.speak({bob.user_id}, LEVEL)
        assert asked == {bob.peer_id: 1}
        hellos.set()  # the hello lands: it tells the levels, nothing asked
        await wait_until(lambda: levels.of(bob.peer_id) == OUR_LEVELS)
        assert _caps_opened(alice) == 0
        assert alice.capability_asks() == {"asked": 0, "unanswered": 1, "hellos": 1}
