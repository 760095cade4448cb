"""A hostile peer that churns connections (SPEC §14.3): each time it opens a new connection and
closes the one the node's gossip stream to it was on, the node greets it again (a new stream
and a hello with our record, `HelloPubsub._greet_again`). That is bounded per peer, and a peer
past the bound is charged, so a loop of reconnects costs the node no stream or hello each.
A peer that closes all its connections and dials again meets the connection budget instead
(`node.p2p.connection_budget`, SPEC §11.6.6): past it, its connection is closed before our hello.
Our user's other homes are exempt: a sibling that reconnects as often is greeted each time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import multiaddr  # type: ignore[import-untyped]
import pytest
from libp2p.abc import INetConn
from libp2p.peer.id import ID

from hearthmesh.node.node import Node
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.p2p.pubsub_hello import REGREET_BURST, REGREET_PER_S, HelloPubsub
from hearthmesh.protocol.inbound import InboundPolicy
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import listed_connections, live_connections, node_config, wait_until
from .test_devices import SkewedClock, link_device

pytestmark = pytest.mark.integration

ROUNDS = 10


async def test_a_peer_that_churns_connections_is_greeted_again_within_a_budget_and_charged(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "node")) as node,
        HostilePeer() as kit,
    ):
        address = f"{node.listen_addrs[0]}/p2p/{node.peer_id}"
        await kit.connect(address)
        pubsub = _pubsub(node)
        kit_id = ID.from_base58(kit.peer_id)
        started = asyncio.get_running_loop().time()
        for done in range(1, ROUNDS + 1):
            await wait_until(lambda: kit_id in pubsub.peers)  # the node's gossip stream to it
            await _reconnect(kit, node, address)
            # the node saw the old connection close with the new one up: greeted or charged
            await wait_until(lambda: pubsub.regreeted + pubsub.not_regreeted >= done)  # noqa: B023
        refills = (asyncio.get_running_loop().time() - started) * REGREET_PER_S  # ~0.1 at idle
        assert pubsub.regreeted >= 1  # the greeting again ran ...
        assert pubsub.regreeted <= REGREET_BURST + int(refills) + 1  # ... within its budget
        assert pubsub.not_regreeted >= ROUNDS - pubsub.regreeted  # a greeting can count twice
        await wait_until(lambda: node.peer_points(kit.peer_id) > 0)  # charged, from the trio side
        assert node.failure is None


BURST = 3
PER_MIN = 30.0
"""A small budget, so that the test is short: 3 connections at once, then one per 2 s."""


async def test_a_peer_that_reconnects_in_full_past_its_budget_is_not_greeted_and_charged(
    tmp_path: Path,
) -> None:
    policy = InboundPolicy(connection_burst=BURST, connections_per_min=PER_MIN)
    clock = SkewedClock(0)
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "node", inbound=policy), clock=clock) as node,
        HostilePeer(listens=False) as kit,  # every connection between them is the kit's
    ):
        kit.answer_hellos()  # counts the node's hellos to it
        address = f"{node.listen_addrs[0]}/p2p/{node.peer_id}"
        host = node._host
        started = asyncio.get_running_loop().time()
        for done in range(1, ROUNDS + 1):
            await _dial(kit, node, address)
            # each connection is greeted or turned away
            await wait_until(lambda: kit.hellos_answered + host.connections_turned_away() >= done)  # noqa: B023
            await _disconnected(node, kit)  # all of them: the next one is a full reconnect
        refills = (asyncio.get_running_loop().time() - started) * PER_MIN / 60  # ~5 here
        turned_away = host.connections_turned_away()
        assert kit.hellos_answered >= BURST  # the burst was greeted ...
        assert turned_away >= ROUNDS - BURST - int(refills) - 1  # ... the rest mostly not
        await wait_until(lambda: node.peer_points(kit.peer_id) > 0)  # charged
        assert node.failure is None
        # A peer that comes back after a while is served as any other.
        clock.advance(int(60_000 / PER_MIN) + 500)
        await _disconnected(node, kit)
        served = kit.hellos_answered
        await _dial(kit, node, address)
        await wait_until(lambda: kit.hellos_answered > served)
        assert node.failure is None


async def test_a_sibling_that_reconnects_past_the_budget_is_still_greeted_and_not_charged(
    tmp_path: Path,
) -> None:
    """SPEC §11.6.6: our user's other homes are never turned away by the connection budget. The
    sibling is the kit with the linked home's node key (a running node would dial back)."""
    policy = InboundPolicy(connection_burst=BURST, connections_per_min=1.0)  # no refill here
    async with asyncio.timeout(90), Node(node_config(tmp_path / "home", inbound=policy)) as home:
        config, linked = await link_device(home, tmp_path / "laptop")
        async with Node(config) as laptop:
            seed = laptop.keyring.node.seed
        async with HostilePeer(seed=seed, listens=False) as sibling:
            assert sibling.peer_id == linked.peer_id
            sibling.answer_hellos()  # counts the home's hellos to it
            address = f"{home.listen_addrs[0]}/p2p/{home.peer_id}"
            host = home._host
            for done in range(1, ROUNDS + 1):
                await _dial(sibling, home, address)
                await wait_until(
                    lambda: (
                        sibling.hellos_answered >= done  # noqa: B023
                        or host.connections_turned_away() > 0
                    )
                )
                assert host.connections_turned_away() == 0  # each one greeted, none turned away
                await _disconnected(home, sibling)
            assert home.peer_points(sibling.peer_id) == 0
            assert home.failure is None


async def test_a_sibling_that_churns_connections_is_greeted_again_each_time_and_not_charged(
    tmp_path: Path,
) -> None:
    """SPEC §14.3: our user's other homes are exempt from the greeting-again budget, as from
    the connection budget (§11.6.6). The sibling is the kit with the linked home's key."""
    async with asyncio.timeout(90), Node(node_config(tmp_path / "home")) as home:
        config, linked = await link_device(home, tmp_path / "laptop")
        async with Node(config) as laptop:
            seed = laptop.keyring.node.seed
        # Not listening: the home dials its own linked homes too, and a connection of its own
        # beside the kit's churned ones raced the test's wait for the gossip stream (seen in CI).
        async with HostilePeer(seed=seed, listens=False) as sibling:
            assert sibling.peer_id == linked.peer_id
            address = f"{home.listen_addrs[0]}/p2p/{home.peer_id}"
            await sibling.connect(address)
            pubsub = _pubsub(home)
            sibling_id = ID.from_base58(sibling.peer_id)
            for done in range(1, ROUNDS + 1):
                await wait_until(lambda: sibling_id in pubsub.peers)
                await _reconnect(sibling, home, address)
                await wait_until(lambda: pubsub.regreeted + pubsub.not_regreeted >= done)  # noqa: B023
            # Past REGREET_BURST, none refused. At least once a round: under load a greeting's
            # stream can land on the connection the kit is closing and be greeted again itself.
            assert pubsub.not_regreeted == 0
            assert pubsub.regreeted >= ROUNDS
            assert home.peer_points(sibling.peer_id) == 0
            assert home.failure is None


async def test_a_connection_turned_away_costs_no_write_not_even_a_gossip_hello(
    tmp_path: Path,
) -> None:
    """SPEC §11.6.6, §14.3: pubsub learns of a connection from libp2p as the budget does, and
    greets it on its own; on one the budget turns away it opens no stream and writes no hello
    (the node's wire counts: no write at all, not even a stream's negotiation)."""
    policy = InboundPolicy(connection_burst=1, connections_per_min=1.0)  # the first one only
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "node", inbound=policy)) as node,
        HostilePeer(listens=False) as kit,
    ):
        kit.answer_hellos()
        address = f"{node.listen_addrs[0]}/p2p/{node.peer_id}"
        host = node._host
        await _dial(kit, node, address)
        await wait_until(lambda: _gossip_writes(node) >= 1)  # the one admitted: greeted
        await _disconnected(node, kit)
        before = host.wire()["writes"]
        for done in range(1, ROUNDS + 1):
            await _dial(kit, node, address)
            await wait_until(lambda: host.connections_turned_away() >= done)  # noqa: B023
            await _disconnected(node, kit)
        assert host.wire()["writes"] == before
        assert node.failure is None


def _gossip_writes(node: Node) -> int:
    """The node's writes on streams of a gossip protocol (its hello is the first)."""
    writes: dict[str, int] = node._host.wire()["writes"]
    return sum(n for protocol, n in writes.items() if "meshsub" in protocol)


DISCONNECT_SEEN_S = 30.0
"""How long the node may take to count out the connections the kit closed (~0.2 s alone; a
fresh clone's CI beside five venv builds once waited out the test's whole 90 s here)."""


async def _disconnected(node: Node, kit: HostilePeer) -> None:
    """Every connection between them closed, as the node sees it; if not within
    `DISCONNECT_SEEN_S`, fail with what each side still lists. The kit's own gossip may dial
    the node again while its disconnect closes (its greeting of a new peer opens a stream, and
    a stream to a peer with no connection dials one): the kit closes that one too."""
    try:
        async with asyncio.timeout(DISCONNECT_SEEN_S):
            while kit.peer_id in node._host.connected_peers():
                await kit.host.disconnect(node.peer_id)
                await wait_until(
                    lambda: (
                        kit.peer_id not in node._host.connected_peers()
                        or bool(live_connections(kit.host, node.peer_id))
                    )
                )
    except TimeoutError:
        pytest.fail(
            f"the node still counts the kit: node lists {_connections(node._host, kit.peer_id)},"
            f" kit lists {_connections(kit.host, node.peer_id)}"
        )


def _connections(host: P2PHost, peer: str) -> list[str]:
    """What libp2p lists towards `peer`, for a failure's message."""
    listed = listed_connections(host, peer)
    return [f"closed={conn.is_closed} streams={len(conn.get_streams())}" for conn in listed]


DIAL_SEEN_S = 5.0
"""How long a node may take to count a connection it turned away after the kit's dial of it
failed (it closes it on the trio thread, then counts it)."""


async def _dial(kit: HostilePeer, node: Node, address: str) -> None:
    """A new connection, whatever the kit's own list says (it may still hold one the node
    closed). A dial may fail only because the node turned its connection away; any other
    failure fails the test here, not as a timeout of a wait that could never end."""
    target = ID.from_base58(node.peer_id)
    turned_away = node._host.connections_turned_away()

    async def dial() -> None:
        libp2p_host = kit.host._host
        assert libp2p_host is not None
        await libp2p_host.get_network().dial_addr(multiaddr.Multiaddr(address), target)

    try:
        await kit.host._call(P2PError, "dial", dial)
    except P2PError as exc:
        try:
            async with asyncio.timeout(DIAL_SEEN_S):
                await wait_until(lambda: node._host.connections_turned_away() > turned_away)
        except TimeoutError:
            pytest.fail(f"the kit's dial of {address} failed, not turned away by the node: {exc!r}")


def _pubsub(node: Node) -> HelloPubsub:
    pubsub = node._host._gossip._pubsub
    assert isinstance(pubsub, HelloPubsub)
    return pubsub


async def _reconnect(kit: HostilePeer, node: Node, address: str) -> None:
    """The kit opens a second connection to `node`, then closes the one it had (a dial that
    libp2p's one connection per peer does not stop: the swarm's dial of an address). The old
    one is closed only once the node lists the new one: the kit's dial returns before the node
    has taken it in, and a close the node saw first left it no connection for a moment, a full
    disconnect and not the churn counted here (its gossip peer dropped, never greeted again;
    the wait for the greeting then ran out, seen under load in a suite)."""
    target = ID.from_base58(node.peer_id)
    old: list[INetConn] = []
    listed = live_connections(
        node._host, kit.peer_id
    )  # by identity: one of them may close meanwhile

    async def dial() -> None:
        libp2p_host = kit.host._host
        assert libp2p_host is not None
        network = libp2p_host.get_network()
        old.extend(network.get_connections(target))
        await network.dial_addr(multiaddr.Multiaddr(address), target)

    async def close_old() -> None:
        for connection in old:
            await connection.close()

    await kit.host._call(P2PError, "reconnect", dial)
    await wait_until(
        lambda: any(
            all(c is not was for was in listed) for c in live_connections(node._host, kit.peer_id)
        )
    )
    await kit.host._call(P2PError, "reconnect", close_old)
