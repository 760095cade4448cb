"""Real nodes on 127.0.0.1 with LMDB in temporary directories."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from libp2p.abc import INetConn
from libp2p.peer.id import ID

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import DeliveredToHome, NodeEvent
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.gossip import room_topic
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.bench.node_cost import TEST_TIMERS
from hearthmesh.tools.hostile.peer import HostilePeer
from hearthmesh.tools.node_process import NodeProcess, free_port, spawn_node

__all__ = [
    "PRESENCE",
    "NodeProcess",
    "acks_of",
    "collect",
    "free_port",
    "node_config",
    "spawn_node",
    "wait_until",
]

E = TypeVar("E")

FAST = TEST_TIMERS
"""Every test node's timers, shortened where a test waits on them. A dial of an away home's
address (its port closed) is refused at once, but the swarm tried it three times more, 0.1,
0.2 and 0.4 s apart: 10 ms apart here, the same tries."""

PRESENCE: dict[str, Any] = {"presence_interval_ms": 300, "presence_ttl_ms": 1500}
"""Presence every 0.3 s and offline 1.5 s after the last, for the tests of presence (not 10 s
and 30 s). Not in `FAST`: two connected nodes announcing every 0.3 s used ~54 ms of CPU per
second, ~7 ms at the default interval, and the suite's other tests ran some 800 node-seconds."""


CATALOGUE_STANDING = StandingPolicy(ban_points=1_000_000)
"""For a test that walks one peer through a catalogue of refusals: its codes are the subject,
not the ban that would follow the fourth (SPEC §11.6 has its own tests)."""


UNFORGIVING = StandingPolicy(forgive_ms=3_600_000)
"""For a test that reads a peer's points exactly: none is forgiven while it runs."""


@asynccontextmanager
async def node_and_kit(
    make_node: NodeFactory, name: str, **overrides: Any
) -> AsyncIterator[tuple[Node, HostilePeer]]:
    """A node named `name` that forgives no point (`UNFORGIVING`) and a hostile kit, not yet
    connected: for a test of what the node charges the kit."""
    async with make_node(name, standing=UNFORGIVING, **overrides) as node, HostilePeer() as kit:
        yield node, kit


def node_config(path: Path, **overrides: Any) -> NodeConfig:
    settings = {"listen_addrs": ("/ip4/127.0.0.1/tcp/0",), **FAST, **overrides}
    return NodeConfig(data_dir=path, **settings)


NodeFactory = Callable[..., AbstractAsyncContextManager[Node]]


async def befriend_nodes(a: Node, b: Node) -> None:
    """Make the users of `a` and `b` contacts of each other, as an accepted friend request
    leaves them: presence and typing go to contacts alone (SPEC §32.4)."""
    for one, other in ((a, b), (b, a)):
        await one.store.run(one.store.store.add_contact, one.user_id, other.user_id, now_ms=0)


@pytest.fixture
def make_node(tmp_path: Path) -> NodeFactory:
    counter = iter(range(1000))

    @asynccontextmanager
    async def factory(name: str | None = None, **overrides: Any) -> AsyncIterator[Node]:
        path = tmp_path / (name or f"node{next(counter)}")
        async with Node(node_config(path, **overrides)) as node:
            yield node

    return factory


@pytest.fixture
def hellos(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set: hellos are answered; cleared: every hello's answer (either way) waits."""
    gate = asyncio.Event()
    gate.set()
    greet = HelloService._answer

    async def held(self: HelloService, stream: FrameStream, *, with_levels: bool) -> None:
        await gate.wait()
        await greet(self, stream, with_levels=with_levels)

    monkeypatch.setattr(HelloService, "_answer", held)
    return gate


@asynccontextmanager
async def alice_and_away_bob(
    make_node: NodeFactory, relay: Node
) -> AsyncIterator[tuple[Node, UserId, RoomId]]:
    """Alice on `relay`, in a direct room with bob, whose home started once (so alice knows its
    record) and is away now: what she sends him the relay holds (SPEC §11.2.3)."""
    async with make_node("bob") as bob:
        bob_id = bob.user_id
        await bob.connect(relay.listen_addrs[0])
        bob_record = bob.home_record()
    async with make_node("alice") as alice:
        await alice.connect(relay.listen_addrs[0])
        await alice.learn_home_record(bob_record)
        yield alice, bob_id, await alice.open_direct(bob_id)


async def collect(
    events: AsyncIterator[NodeEvent],
    kind: type[E],
    count: int,
    where: Callable[[E], bool] = lambda _event: True,
) -> list[E]:
    """The first `count` events of type `kind` that satisfy `where` (others are skipped)."""
    found: list[E] = []
    async for event in events:
        if isinstance(event, kind) and where(event):
            found.append(event)
            if len(found) == count:
                break
    return found


async def acks_of(
    events: AsyncIterator[NodeEvent], sent: Iterable[Envelope]
) -> list[DeliveredToHome]:
    """The `DeliveredToHome` events of `sent`, once each has one (a ROOM_KEY envelope our node
    sent before them gets one too, SPEC §27.5: it is skipped)."""
    waiting = {e.message_id for e in sent}
    found: list[DeliveredToHome] = []
    async for event in events:
        if isinstance(event, DeliveredToHome) and event.message_id in waiting:
            found.append(event)
            waiting.discard(event.message_id)
            if not waiting:
                break
    return found


async def wait_until(predicate: Callable[[], bool], *, poll_s: float = 0.02) -> None:
    """Poll a condition that has no event to await (callers bound it with asyncio.timeout)."""
    while not predicate():  # noqa: ASYNC110 - the condition (a peer's state) has no event
        await asyncio.sleep(poll_s)


def listed_connections(host: P2PHost, peer: str) -> list[INetConn]:
    """The connections libp2p lists towards `peer` (a copy, read from the test's thread)."""
    libp2p_host = host._host
    return (
        []
        if libp2p_host is None
        else libp2p_host.get_network().get_connections(ID.from_base58(peer))
    )


def live_connections(host: P2PHost, peer: str) -> list[INetConn]:
    """`listed_connections` that are not closed."""
    return [conn for conn in listed_connections(host, peer) if not conn.is_closed]


async def wait_until_async(probe: Callable[[], Awaitable[int]], target: int) -> None:
    """Poll an async count until it reaches `target` (bounded by the caller's timeout)."""
    while await probe() < target:  # noqa: ASYNC110 - a store count has no event
        await asyncio.sleep(0.02)


async def direct_room_with(home: Node, mallory: HostilePeer) -> tuple[RoomId, Envelope]:
    """`mallory` connects to `home`, whose user opens a direct room with her (so `home` follows
    its topic); her first message there is STORED. Returns the room and that message."""
    await mallory.connect(home.listen_addrs[0])
    room = await home.open_direct(UserId(mallory.user_id))
    hers = mallory.forge.message(room, "hi", now_ms=mallory.now_ms())
    assert await mallory.deliver_wires(home.peer_id, [hers.wire], home.user_id) == ["STORED"]
    return room, hers


async def refused_where_not_addressed(
    home: Node, mallory: HostilePeer, room: RoomId, seal: Callable[[], Envelope]
) -> None:
    """An addressed envelope `seal` makes, for no one on `home` (SPEC §16.2.3, §27.5.3): when
    delivered, refused NOT_ADDRESSED, stored nowhere and charged one item; when gossiped on the
    room's topic (which `home` follows), dropped and charged too."""
    delivered = seal()
    outcome = await mallory.deliver_wires(home.peer_id, [delivered.wire], home.user_id)
    assert outcome == ["REJECTED:NOT_ADDRESSED"]
    points = home.peer_points(mallory.peer_id)
    assert points == StandingPolicy().item_points
    assert await home.get_event(delivered.message_id) is None
    topic = room_topic(room)
    assert await mallory.join(topic, home.peer_id)
    gossiped = seal()
    assert await mallory.publish(topic, mallory.gossip(gossiped.wire)) == "published"
    await wait_until(lambda: home.peer_points(mallory.peer_id) > points)
    assert await home.get_event(gossiped.message_id) is None
