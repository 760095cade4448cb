"""PeerLinks (node/delivery/peer_link.py): what a batch left unanswered past the ack bound
closes (SPEC §11.5.2), between two real hosts on this machine."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import TYPE_PING, YAMUX_HEADER_FORMAT
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.node.delivery.peer_link import OPEN_TIMEOUT_S, DeliveryFailed, PeerLinks, SlowHome
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import (
    CLOSED_BY_PEER,
    CLOSED_UNANSWERED,
    P2PHost,
    StreamHandler,
)
from hearthmesh.node.p2p.yamux import answers_ping
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Deliver,
    decode_frame,
    encode_ack,
    sign_ack,
)
from hearthmesh.protocol.identity import keypair_from_seed
from tests.integration.conftest import node_config, wait_until
from tests.node.test_libp2p_host import config, hosts, seed
from tests.node.test_webrtc import webrtc_only

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 0.5
DEAD_PING_S = 1.0
"""`live_ping_s` of the host whose batch goes unanswered on a dead path: no pong comes, so the
bound is all it waits (the host's `LIVE_PING_S`, 5 s, by default)."""
ALIVE_PING_S = 5.0
"""`live_ping_s` of the host that waits on a late ack or open over a live connection: each
look at the connection (one per ack bound past the bound) waits this long for its pong, or
for anything read, so a loaded machine must starve the peer's pong ten ack bounds to fail
these tests. The host's default (`LIVE_PING_S`), named here: with a pong bound of 0.1 ms
the three tests fail (`_NoPong`), so the bound is what stands between them and load."""
LIVE_ACK_TIMEOUT_S = 0.25
"""The ack bound of the tests whose connection answers each ping: they count bounds (an ack
four bounds late, a patience of three), and `ALIVE_PING_S`, not the bound,
is what stands between them and load; at `ACK_TIMEOUT_S` the late ack test waited 4 s."""
TICKS = "/hearthmesh/test-ticks/1"


HOST_LOG = "hearthmesh.node.p2p.host"


async def logged(caplog: pytest.LogCaptureFixture, words: str) -> None:
    """Until the host logs a decision containing `words` (the test's timeout bounds it): the
    event that ends the wait for a close that must not come."""
    await wait_until(lambda: any(words in record.getMessage() for record in caplog.records))


async def never_answers(stream: FrameStream) -> None:
    """A deliver handler that reads the batch and sends no ack (a dead or stuck path)."""
    await stream.read_frame()
    await asyncio.sleep(30)


FROZEN_AT_MOST_S = 15.0
"""How long `freezing` stops a host's libp2p thread if the test never thaws it."""


def freezing(host: P2PHost, thawed: threading.Event) -> StreamHandler:
    """A deliver handler that reads the batch, then stops `host`'s libp2p thread until the test
    sets `thawed`, once its peer has given the path up (a dead path: nothing comes back, not
    even a pong). It slept a fixed ack bound + `DEAD_PING_S` + 1 s before, which each test
    then waited out: under load B may freeze a little late, and the peer's ping be answered,
    so the peer's next look decides instead."""

    async def freezes(stream: FrameStream) -> None:
        await stream.read_frame()
        host._bridge.run_sync_soon(thawed.wait, FROZEN_AT_MOST_S)
        await asyncio.sleep(30)

    return freezes


async def test_an_unanswered_batch_closes_the_tcp_connection_so_the_next_try_dials() -> None:
    """B's libp2p thread stops: a dead path. The patience (60 s, past this test's 20 s bound)
    is for a connection that answers a ping; this one soon answers none, so its batch fails
    once a ping goes unanswered, well inside 20 s. (Under load B may freeze a little late, and
    what it sent before counts as heard: the batch may then wait on past its bound; CI saw
    `waited_late` 1 once.)"""
    thawed = threading.Event()
    async with asyncio.timeout(20), hosts(config(1, live_ping_s=DEAD_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, freezing(b, thawed))
        await a.connect(b.listen_addrs[0])
        links = PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S, ack_patience_s=60.0)
        try:
            with pytest.raises(DeliveryFailed, match="TimeoutError") as failed:
                await links.deliver(b.peer_id, [], [])
            assert not isinstance(failed.value, SlowHome)  # a lost path: batches keep their size
            await wait_until(lambda: b.peer_id not in a.connected_peers())
        finally:
            thawed.set()
        # Counted by why (SPEC §10.13): ours on A, the peer's on B.
        await wait_until(lambda: a.connections_closed == {CLOSED_UNANSWERED: 1})
        await wait_until(lambda: b.connections_closed == {CLOSED_BY_PEER: 1})


async def test_an_unanswered_batch_keeps_a_connection_that_answers_a_ping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """B's application never acks, but its connection carries bytes both ways: slow, not
    gone. Closing it cut every stream on it and under load made each home dial again
    (SPEC §11.5.2)."""
    caplog.set_level(logging.INFO, logger=HOST_LOG)
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, never_answers)
        await a.connect(b.listen_addrs[0])
        with pytest.raises(DeliveryFailed, match="TimeoutError"):
            await PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S).deliver(b.peer_id, [], [])
        await logged(caplog, "answers a ping: slow, not gone: kept")  # the close's ping, answered
        assert b.peer_id in a.connected_peers()
        assert a.connections_closed == {}


def acking_late(node_seed: bytes, delay_s: float) -> StreamHandler:
    """A deliver handler that acks each batch `delay_s` after it read it (a slow home)."""

    async def handle(stream: FrameStream) -> None:
        async for data in stream:
            frame = decode_frame(data)
            assert isinstance(frame, Deliver)
            await asyncio.sleep(delay_s)
            ack = sign_ack(keypair_from_seed(node_seed), frame.batch_id, ())
            await stream.write_frame(encode_ack(ack))

    return handle


async def test_a_late_ack_on_a_connection_that_answers_a_ping_is_waited_for() -> None:
    """SPEC §11.5.2: B acks four bounds late, and its connection answers a ping meanwhile:
    slow, not gone. The batch is acked, not failed: a failed batch made its destination down
    (a relay copy, its next batches parked, all of them sent again later), and at 50 nodes on
    2 cores that extra work made more acks late until the mesh stalled (SPEC §20.6)."""
    async with asyncio.timeout(20), hosts(config(1, live_ping_s=ALIVE_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, acking_late(seed(2), 4 * LIVE_ACK_TIMEOUT_S))
        await a.connect(b.listen_addrs[0])
        bound_s = LIVE_ACK_TIMEOUT_S
        links = PeerLinks(a, ack_timeout_s=bound_s, ack_patience_s=20 * bound_s)
        ack = await links.deliver(b.peer_id, [], [])
        assert ack.results == ()
        assert links.waited_late == 1
        assert b.peer_id in a.connected_peers()
        assert a.connections_closed == {}
        await links.deliver(b.peer_id, [], [])  # the same stream carries the next batch
        assert links.waited_late == 2


def answering_late(host: P2PHost, delay_s: float) -> None:
    """`host` agrees on the protocol of each inbound stream `delay_s` late (a loaded home)."""
    multiselect = cast(Any, host._require_host()).multiselect
    negotiate = multiselect.negotiate

    async def late(*args: Any) -> Any:
        await trio.sleep(delay_s)
        return await negotiate(*args)

    multiselect.negotiate = late


async def test_a_deliver_streams_late_open_on_a_connection_that_answers_is_waited_for() -> None:
    """SPEC §11.5.2: B agrees on the deliver protocol three open bounds late, and its
    connection answers a ping meanwhile. The open is waited on and the batch acked; a failed
    open failed its batch (relayed, the destination parked) and under load, at 50 nodes on 2
    cores, most of a workload's failed batches were such opens (SPEC §20.6)."""
    async with asyncio.timeout(20), hosts(config(1, live_ping_s=ALIVE_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, acking(seed(2), []))
        await a.connect(b.listen_addrs[0])
        answering_late(b, 3 * ACK_TIMEOUT_S)
        links = PeerLinks(
            a,
            ack_timeout_s=ACK_TIMEOUT_S,
            ack_patience_s=20 * ACK_TIMEOUT_S,
            open_timeout_s=ACK_TIMEOUT_S,
        )
        ack = await links.deliver(b.peer_id, [], [])
        assert ack.results == ()
        assert links.waited_late == 1
        assert a.connections_closed == {}


async def test_a_late_ack_is_waited_for_no_longer_than_the_patience(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """B never acks, but its connection answers: the batch fails once the patience is spent
    (a stuck home holds its destination's one batch in flight that long, no longer), and
    the connection is kept."""
    caplog.set_level(logging.INFO, logger=HOST_LOG)
    async with asyncio.timeout(20), hosts(config(1, live_ping_s=ALIVE_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, never_answers)
        await a.connect(b.listen_addrs[0])
        bound_s = LIVE_ACK_TIMEOUT_S
        links = PeerLinks(a, ack_timeout_s=bound_s, ack_patience_s=3 * bound_s)
        with pytest.raises(SlowHome, match="TimeoutError"):  # the next batches are smaller
            await links.deliver(b.peer_id, [], [])
        assert links.waited_late == 1
        await logged(caplog, "answers a ping: slow, not gone: kept")  # the close's ping, answered
        assert b.peer_id in a.connected_peers()
        assert a.connections_closed == {}


async def test_an_unanswered_batch_keeps_a_webrtc_connection_no_dial_could_replace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the relay gone, WebRTC is the only path between two homes, and closing it left
    them apart for good; a WebRTC path that died closes with ICE consent (SPEC §10.11)."""
    caplog.set_level(logging.INFO, logger=HOST_LOG)
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, never_answers)
        await webrtc_only(a, b)
        links = PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S)
        with pytest.raises(DeliveryFailed, match="TimeoutError"):
            await links.deliver(b.peer_id, [], [])
        await logged(caplog, "over WebRTC failed; the connection is kept")  # no close started
        assert a.peer_paths().get(b.peer_id) == ["webrtc"]


async def ticking(stream: FrameStream) -> None:
    """A handler that writes a frame every 0.1 s: its peer's connection reads bytes."""
    for _ in range(100):
        await stream.write_frame(b"tick")
        await asyncio.sleep(0.1)


async def test_a_connection_that_reads_while_its_pong_is_late_counts_as_alive() -> None:
    """SPEC §11.5.2: a peer's loop answers a ping after the frames queued before it, and under
    load the pong came later than the bound while gossip and acks still came in: thousands
    of slow connections were closed at 50 nodes. Bytes read while the ping waits count as an
    answer. Here no ping goes out at all (dropped before the wire), and the peer writes."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(TICKS, ticking)
        await a.connect(b.listen_addrs[0])

        async def ping_dropped() -> bool:
            network = a._require_host().get_network()
            (conn,) = network.get_connections(ID.from_base58(b.peer_id))
            muxed = cast(Any, conn.muxed_conn)
            write = muxed._write_frame

            async def drop_pings(data: bytes) -> None:
                if struct.unpack(YAMUX_HEADER_FORMAT, data[:12])[1] != TYPE_PING:
                    await write(data)

            muxed._write_frame = drop_pings
            try:
                return await answers_ping(muxed, 1.0)
            finally:
                del muxed._write_frame

        async with await a.open_stream(b.peer_id, TICKS):
            assert await a._bridge.run(ping_dropped)


def acking(node_seed: bytes, paths: list[str | None]) -> StreamHandler:
    """A deliver handler that acks every batch, signed with the host's own key, and notes the
    path each batch's stream came by."""

    async def handle(stream: FrameStream) -> None:
        async for data in stream:
            frame = decode_frame(data)
            assert isinstance(frame, Deliver)
            paths.append(stream.path)
            ack = sign_ack(keypair_from_seed(node_seed), frame.batch_id, ())
            await stream.write_frame(encode_ack(ack))

    return handle


async def dial_afresh(host: P2PHost, address: str) -> None:
    """Dial `address` directly although `host` is connected to its peer already: `connect`
    returns the relayed connection there (py-libp2p's DCUtR loop used to make the direct one)."""
    info = info_from_p2p_addr(Multiaddr(address))

    async def dial() -> None:
        await host._require_host().get_network().dial_addr(info.addrs[0], info.peer_id)

    await host._bridge.run(dial)


async def test_a_deliver_stream_over_a_relay_is_left_once_a_direct_connection_is_up() -> None:
    """New streams take a direct (or WebRTC) connection over a relayed one (SPEC §10.11); the
    deliver stream opened while the relay was the only path is replaced then, not reused for
    its life (an hour of a chat's batches went by the relay before)."""
    async with (
        asyncio.timeout(20),
        hosts(config(1), config(2, webrtc=False), config(3, webrtc=False)) as (relay, a, b),
    ):
        for home in (a, b):  # no punch: the test makes the direct connection itself
            home._punch.relayed_connection_opened = lambda peer: None  # type: ignore[method-assign]
        paths: list[str | None] = []
        a.set_stream_handler(DELIVER_PROTOCOL, acking(seed(2), paths))
        await a.connect(relay.listen_addrs[0])
        await b.connect(relay.listen_addrs[0])
        while not await a.reserve_relays():  # noqa: ASYNC110 - identify first
            await asyncio.sleep(0.1)
        await b.connect(f"{relay.listen_addrs[0]}/p2p-circuit/p2p/{a.peer_id}")
        assert b.paths_of(a.peer_id) == [relay.peer_id]
        links = PeerLinks(b, ack_timeout_s=5)
        await links.deliver(a.peer_id, [], [])
        await dial_afresh(b, next(x for x in a.listen_addrs if "/p2p-circuit/" not in x))
        await wait_until(lambda: b.paths_of(a.peer_id) == sorted(["direct", relay.peer_id]))
        await links.deliver(a.peer_id, [], [])
        await links.deliver(a.peer_id, [], [])
        assert paths == [relay.peer_id, "direct", "direct"]


async def test_an_unanswered_batch_closes_its_streams_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch unanswered on one connection says nothing of the peer's others: the stream's
    (dead: B's libp2p thread stops, so not even a ping comes back) is closed (SPEC §11.5.2),
    the WebRTC one beside it stays. Every connection to the peer was closed before, WebRTC
    included, which no dial makes again. The failed delivery starts one close, of the
    stream's connection or (no stream) of all; the host logs which, and once that close has
    ended nothing else closes (the test slept 0.5 s for a close of all instead)."""
    caplog.set_level(logging.INFO, logger=HOST_LOG)
    thawed = threading.Event()
    async with asyncio.timeout(20), hosts(config(1, live_ping_s=DEAD_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, freezing(b, thawed))
        await a.connect(b.listen_addrs[0])
        await b.wait_connected(a.peer_id)
        assert await a.upgrade_to_webrtc(b.peer_id)
        assert a.paths_of(b.peer_id) == ["direct", "webrtc"]
        links = PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S)
        try:
            with pytest.raises(DeliveryFailed, match="TimeoutError"):
                await links.deliver(b.peer_id, [], [])
            await wait_until(lambda: a.paths_of(b.peer_id) == ["webrtc"])
        finally:
            thawed.set()
        await logged(caplog, "a connection answers no ping: closed")  # the one close started
        await wait_until(lambda: a.connections_closed.get(CLOSED_UNANSWERED) == 1)
        assert a.paths_of(b.peer_id) == ["webrtc"]
        assert a.connections_closed == {CLOSED_UNANSWERED: 1}


async def test_a_batch_unanswered_while_a_write_is_stuck_on_its_connection_fails() -> None:
    """A partition fills the socket of a connection that carries gossip and other streams: a
    write stuck there holds the connection's write lock until TCP drains after the heal. A
    batch written before waits for its ack, and the ping cannot go out: a dead path. The
    failed stream's reset waited for that lock too, so the batch failed, and its destination
    went down, only once TCP drained: in `simulate --partition 20+30` messages crossed 27-29 s
    after the heal. The reset is given up after its bound now (SPEC §11.5.2)."""
    read, release = threading.Event(), threading.Event()

    async def reads_then_stalls(stream: FrameStream) -> None:
        await stream.read_frame()
        read.set()
        await asyncio.sleep(30)

    async with asyncio.timeout(20), hosts(config(1, live_ping_s=DEAD_PING_S), config(2)) as (a, b):
        b.set_stream_handler(DELIVER_PROTOCOL, reads_then_stalls)
        await a.connect(b.listen_addrs[0])
        links = PeerLinks(a, ack_timeout_s=ACK_TIMEOUT_S, ack_patience_s=60.0)

        async def stuck_writer() -> None:
            network = a._require_host().get_network()
            (conn,) = network.get_connections(ID.from_base58(b.peer_id))
            async with cast(Any, conn.muxed_conn)._write_lock:
                while not release.is_set():  # noqa: ASYNC110 (set on the asyncio thread)
                    await trio.sleep(0.02)

        async def stall_writes_once_read() -> None:
            await wait_until(read.is_set)  # the batch is out: from now on no write gets out
            a._bridge.run_sync_soon(a._bridge.spawn, stuck_writer)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(stall_writes_once_read())
                with pytest.raises(DeliveryFailed, match="no ping answered"):
                    await links.deliver(b.peer_id, [], [])
        finally:
            release.set()
        await wait_until(lambda: a.connections_closed == {CLOSED_UNANSWERED: 1})


async def test_batches_share_one_deliver_stream_and_a_broken_one_is_opened_again() -> None:
    """SPEC §11.5.2: a deliver stream carries batch after batch, each acked before the next
    goes (one multistream negotiation per peer, not per batch: `opens`, status `wire`). B
    resets the stream on the third batch without acking it: that batch fails (the outbox
    keeps its entries, §11.4.1) and the next one opens a new stream and is acked."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        streams: list[FrameStream] = []
        batches: list[int] = []

        async def acks_two_then_breaks(stream: FrameStream) -> None:
            streams.append(stream)
            async for data in stream:
                frame = decode_frame(data)
                assert isinstance(frame, Deliver)
                batches.append(len(streams))
                if len(batches) == 3:
                    await stream.reset()
                    return
                ack = sign_ack(keypair_from_seed(seed(2)), frame.batch_id, ())
                await stream.write_frame(encode_ack(ack))

        b.set_stream_handler(DELIVER_PROTOCOL, acks_two_then_breaks)
        await a.connect(b.listen_addrs[0])
        links = PeerLinks(a, ack_timeout_s=5)
        await links.deliver(b.peer_id, [], [])
        await links.deliver(b.peer_id, [], [])
        assert a.wire()["opens"][DELIVER_PROTOCOL] == 1
        with pytest.raises(DeliveryFailed):
            await links.deliver(b.peer_id, [], [])
        await links.deliver(b.peer_id, [], [])
        assert batches == [1, 1, 1, 2]
        assert a.wire()["opens"][DELIVER_PROTOCOL] == 2
        assert DELIVER_PROTOCOL not in b.wire()["opens"]  # counted where it was opened
        await links.aclose()


async def test_a_nodes_bound_on_opening_a_deliver_stream_is_its_setting(tmp_path: Path) -> None:
    """`stream_open_ms` reaches the node's deliver streams (tests set it shorter where they
    wait on a dead circuit); `OPEN_TIMEOUT_S` by default."""
    async with asyncio.timeout(20):
        async with Node(node_config(tmp_path / "a", stream_open_ms=750)) as node:
            assert node._services.links._open_timeout_s == 0.75
        async with Node(node_config(tmp_path / "b")) as node:
            assert node._services.links._open_timeout_s == OPEN_TIMEOUT_S


async def test_a_deliver_stream_is_reused_until_near_the_receivers_idle_reset() -> None:
    """SPEC §11.5.2, §10.4: B resets a deliver stream on which no frame began for its idle
    timeout (120 s by default). A stream A last used three quarters of that ago (90 s, past
    the old 60 s bound) carries the next batch, acked on it: no new open. One last used 10 s
    short of B's reset (within `REUSE_MARGIN_S`) is closed and the batch goes on a new one.
    The last use is set back instead of waited for."""
    receiver = config(2)
    idle_s = receiver.inbound.idle_timeout_ms / 1000
    async with asyncio.timeout(20), hosts(config(1), receiver) as (a, b):
        acked: list[str | None] = []
        b.set_stream_handler(DELIVER_PROTOCOL, acking(seed(2), acked))
        await a.connect(b.listen_addrs[0])
        links = PeerLinks(a, ack_timeout_s=5)
        await links.deliver(b.peer_id, [], [])
        links._last_used[b.peer_id] -= 0.75 * idle_s
        await links.deliver(b.peer_id, [], [])
        assert (a.wire()["opens"][DELIVER_PROTOCOL], len(acked)) == (1, 2)
        links._last_used[b.peer_id] -= idle_s - 10
        await links.deliver(b.peer_id, [], [])
        assert (a.wire()["opens"][DELIVER_PROTOCOL], len(acked)) == (2, 3)
        await links.aclose()


async def test_a_redial_of_a_peer_no_longer_connected_says_so_and_closes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outbox asks for a redial after a failed batch; by then the connection may have
    closed by itself. The host logged "answers no ping: closed" for it, a close that never
    happened (three in a 50-node run, none in its close counts); now it says the peer is not
    connected, and counts no close."""
    caplog.set_level(logging.INFO, logger=HOST_LOG)
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        await a.connect(b.listen_addrs[0])
        a.disconnect_nowait(b.peer_id)
        await wait_until(lambda: b.peer_id not in a.connected_peers())
        a.redial_nowait(b.peer_id)
        await logged(caplog, f"{b.peer_id} is not connected: the next stream dials afresh")
        assert not any("answers no ping" in record.getMessage() for record in caplog.records)
        assert CLOSED_UNANSWERED not in a.connections_closed
