"""The connection manager on real hosts on 127.0.0.1 (node/p2p/connection_manager.py, SPEC
§10.17): duplicates closed the same at both ends, idle connections trimmed over the high
watermark, kept and busy ones left."""

from __future__ import annotations

import asyncio

import multiaddr  # type: ignore[import-untyped]
import pytest
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

from hearthmesh.node.p2p.connection_trim import CLOSED_DUPLICATE, CLOSED_IDLE, TrimPolicy
from hearthmesh.node.p2p.host import CLOSED_BY_PEER, P2PHost
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import ECHO, SINK, config, echo, hosts

pytestmark = pytest.mark.integration


async def dialled_by_us(host: P2PHost, peer: str) -> list[bool]:
    """For each of `host`'s open connections to `peer`: did `host` dial it?"""

    async def read() -> list[bool]:
        conns = host._require_host().get_network().get_connections(ID.from_base58(peer))
        return [bool(c.muxed_conn.is_initiator) for c in conns if not c.is_closed]

    return await host._bridge.run(read)


async def test_two_hosts_that_dialled_each_other_keep_one_the_same_at_both_ends() -> None:
    """b dials a back while a's connection to b is open (py-libp2p trims neither: both are
    inside its 20 s grace). Each end then closes the one the higher peer id dialled: one
    connection left, the same one (dialled by the lower id, as each end sees it), and the pair
    never lost both."""
    trim = TrimPolicy(duplicate_grace_s=0.3, tick_s=0.1)
    async with (
        asyncio.timeout(30),
        hosts(config(1, connection_trim=trim), config(2, connection_trim=trim)) as (a, b),
    ):
        assert await a.connect(b.listen_addrs[0]) == b.peer_id

        async def dial_back() -> None:
            swarm = b._require_host().get_network()
            await swarm.dial_addr(multiaddr.Multiaddr(a.listen_addrs[0]), ID.from_base58(a.peer_id))

        await b._bridge.run(dial_back)
        assert len(await dialled_by_us(b, a.peer_id)) == 2
        while (
            len(await dialled_by_us(a, b.peer_id)) != 1
            or len(await dialled_by_us(b, a.peer_id)) != 1
        ):
            assert a.connected_peers() == [b.peer_id] and b.connected_peers() == [a.peer_id]
            await asyncio.sleep(0.05)
        assert await dialled_by_us(a, b.peer_id) == [a.peer_id < b.peer_id]
        assert await dialled_by_us(b, a.peer_id) == [b.peer_id < a.peer_id]
        await wait_until(lambda: sum(a.connections_closed.values()) == 1)
        await wait_until(lambda: sum(b.connections_closed.values()) == 1)
        closes = {**a.connections_closed, **b.connections_closed}
        assert set(closes) <= {CLOSED_DUPLICATE, CLOSED_BY_PEER} and CLOSED_DUPLICATE in closes


async def test_over_the_high_mark_idle_connections_close_and_kept_and_busy_ones_stay() -> None:
    """a holds four connections, high mark 2, low 1: b is kept (`set_kept`: a group's home),
    a stream to c is open, so d's and e's close as idle; a fifth peer dialling a stranger's
    connection in is trimmed the same way."""
    trim = TrimPolicy(low=1, high=2, grace_s=0.3, idle_s=0.3, tick_s=0.1)
    others = [config(n, connection_trim=None) for n in range(2, 7)]
    async with asyncio.timeout(30), hosts(config(1, connection_trim=trim), *others) as group:
        a, b, c, d, e, stranger = group
        c.set_stream_handler(ECHO, echo)
        a.set_kept(frozenset({b.peer_id}))
        for peer in (b, c, d, e):
            assert await a.connect(peer.listen_addrs[0]) == peer.peer_id
        async with await a.open_stream(c.peer_id, ECHO) as stream:
            await wait_until(lambda: sorted(a.connected_peers()) == sorted([b.peer_id, c.peer_id]))
            assert a.connections_closed == {CLOSED_IDLE: 2}
            await stream.write_frame(b"still open")
            assert await stream.read_frame() == b"still open"
            assert await stranger.connect(a.listen_addrs[0]) == a.peer_id
            await wait_until(lambda: a.connections_closed == {CLOSED_IDLE: 3})
            assert sorted(a.connected_peers()) == sorted([b.peer_id, c.peer_id])


async def test_each_connection_is_counted_under_its_dialler_and_the_first_stream_it_opened() -> (
    None
):
    """The census (status `wire.connections`, SPEC §20.6): a dials b and opens an echo stream:
    a counts one outbound connection opened for echo, b one inbound; a later stream, and one
    b opens, name it no more. gossip's, identify's and ping's streams name nothing."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        a.set_stream_handler(ECHO, echo)
        b.set_stream_handler(ECHO, echo)
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        for opener, peer in ((a, b), (a, b), (b, a)):
            async with await opener.open_stream(peer.peer_id, ECHO) as stream:
                await stream.write_frame(b"x")
                assert await stream.read_frame() == b"x"
        assert a.wire()["connections"] == {"outbound": 1, f"outbound {ECHO}": 1}
        assert b.wire()["connections"] == {"inbound": 1, f"inbound {ECHO}": 1}


async def test_the_census_names_a_connection_by_the_stream_opened_first_not_agreed_first() -> None:
    """py-libp2p's streams agree on their protocol a round trip after they open, our lazy ones
    at once: a kad request that dialled a connection agreed after the hello opened as it was
    announced, and the census named hello. It goes by the order streams opened."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        assert await a.connect(b.listen_addrs[0]) == b.peer_id

        async def open_two() -> None:
            network = a._require_host().get_network()
            peer = ID.from_base58(b.peer_id)
            first = await network.new_stream(peer)  # say, the kad request that dialled
            second = await network.new_stream(peer)  # say, the hello
            second.set_protocol(TProtocol(ECHO))
            first.set_protocol(TProtocol(SINK))
            for stream in (first, second):
                await stream.reset()

        await a._bridge.run(open_two)
        # named once the streams opened before them (identify's, gossip's) have agreed
        await wait_until(lambda: a.wire()["connections"] != {"outbound": 1})
        assert a.wire()["connections"] == {"outbound": 1, f"outbound {SINK}": 1}


async def test_a_peer_in_the_peerstore_is_not_dialled_by_libp2ps_auto_connector() -> None:
    """py-libp2p's auto-connector dials peerstore peers up to the midpoint of its watermarks
    (150 with ours): every node dialled every peer it had an address of (SPEC §20.6). Its
    cycle, run to its end, dials nobody now."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        await a.add_peer_address(b.listen_addrs[0])

        async def cycle() -> None:
            swarm = a._require_host().get_network()
            assert isinstance(swarm, Swarm)
            await swarm.auto_connector.maybe_connect()

        await a._bridge.run(cycle)
        assert a.connected_peers() == [] and b.connected_peers() == []
        assert await a.connect(b.listen_addrs[0]) == b.peer_id  # a dial the app asks for
