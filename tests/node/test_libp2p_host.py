"""The libp2p bridge (node/p2p/host.py) with real hosts on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import multiaddr  # type: ignore[import-untyped]
import pytest
import trio
from libp2p.abc import INetConn, INetStream, INetwork
from libp2p.network.config import RetryConfig
from libp2p.peer.id import ID

from hearthmesh.node.p2p.autonat import Reachability
from hearthmesh.node.p2p.errors import (
    PeerUnreachable,
    ProtocolNotSpoken,
    StreamClosed,
    StreamOpenFailed,
    StreamRefused,
)
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.gossip import GossipMessage, Subscription
from hearthmesh.node.p2p.host import (
    CLOSED_BY_PEER,
    CLOSED_REFUSED,
    CLOSED_TRIMMED,
    CLOSED_UNANSWERED,
    HostConfig,
    P2PHost,
    _configure_libp2p_logging,
    _ConnectionTracker,
    _LibP2PStream,
    peer_id_from_seed,
)
from hearthmesh.protocol.errors import LocalProtocolError, TooLarge
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

ECHO = "/hearthmesh/test-echo/1"
SINK = "/hearthmesh/test-sink/1"
TOPIC = "hearthmesh/test/room"


def seed(n: int) -> bytes:
    return bytes([n]) * 32


def config(n: int, **kwargs: object) -> HostConfig:
    return HostConfig(identity_seed=seed(n), **kwargs)  # type: ignore[arg-type]


async def echo(stream: FrameStream) -> None:
    async for frame in stream:
        await stream.write_frame(frame)


@asynccontextmanager
async def hosts(*configs: HostConfig) -> AsyncIterator[list[P2PHost]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(P2PHost(c)) for c in configs]


async def connect_all(group: list[P2PHost]) -> None:
    for i, a in enumerate(group):
        for b in group[i + 1 :]:
            assert await a.connect(b.listen_addrs[0]) == b.peer_id


@pytest.mark.usefixtures("mdns_alone")
async def test_mdns_with_trio_on_the_loop_finds_peers() -> None:
    """py-libp2p's mDNS built zeroconf on the loop's thread and registered by a blocking call,
    so with trio a guest on the loop it waited for the loop it blocked (seconds, until
    zeroconf's timeout), and mDNS kept trio in a thread. `node/p2p/mdns.py` runs those calls
    on threads of their own: a's trio is a guest on this thread (b's, the second here, takes a
    thread), and each finds the other by mDNS alone."""
    first = config(1, trio_on_loop=True, enable_mdns=True)
    async with asyncio.timeout(9), hosts(first, config(2, enable_mdns=True)) as (a, b):
        assert trio.lowlevel.current_trio_token() is not None
        await a.wait_connected(b.peer_id)
        await b.wait_connected(a.peer_id)


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "on-loop"])
async def test_two_hosts_exchange_frames_both_ways(on_loop: bool) -> None:
    """`on-loop`: a's trio is a guest on this thread; b's, the second here, takes a thread."""
    first = config(1, trio_on_loop=on_loop)
    async with asyncio.timeout(8), hosts(first, config(2, trio_on_loop=on_loop)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        assert b.peer_id in a.connected_peers()
        await b.wait_connected(a.peer_id)

        async with await a.open_stream(b.peer_id, ECHO) as stream:
            assert stream.remote_peer == b.peer_id
            for payload in (b"hello", b"", b"\x00" * 1000):
                await stream.write_frame(payload)
                assert await stream.read_frame() == payload
            batch = [b"msg-%d" % i for i in range(50)]
            await stream.write_frames(batch)
            assert [await stream.read_frame() for _ in batch] == batch
            at_limit = os.urandom(a.config.max_frame_bytes)
            await stream.write_frame(at_limit)
            assert await stream.read_frame() == at_limit
            with pytest.raises(LocalProtocolError):
                await stream.write_frame(at_limit + b"!")


async def test_inbound_side_can_open_streams_too() -> None:
    async with asyncio.timeout(8), hosts(config(1), config(2)) as (a, b):
        a.set_stream_handler(ECHO, echo)
        await a.connect(b.listen_addrs[0])
        await b.wait_connected(a.peer_id)
        async with await b.open_stream(a.peer_id, ECHO) as stream:
            await stream.write_frame(b"from b")
            assert await stream.read_frame() == b"from b"


async def test_a_protocol_the_peer_does_not_speak_is_told_apart_from_other_failures() -> None:
    """A peer's `na` is `ProtocolNotSpoken`; a peer out of reach is a StreamOpenFailed that is
    not (what it speaks is unknown): capability levels take only the first as `core`."""
    async with asyncio.timeout(8), hosts(config(1), config(2)) as (a, b):
        await a.connect(b.listen_addrs[0])
        with pytest.raises(ProtocolNotSpoken):
            await a.open_stream(b.peer_id, ECHO)  # b serves no echo
        gone = peer_id_from_seed(seed(9))  # no such host runs
        with pytest.raises(StreamOpenFailed) as failed:
            await a.open_stream(gone, ECHO)
        assert not isinstance(failed.value, ProtocolNotSpoken)


async def test_a_refused_stream_is_told_apart_from_a_lost_path() -> None:
    """A connected peer that says no is `StreamRefused` (the outbox backs off as from a peer
    that will say it again); a peer that was stopped, or never ran, is `PeerUnreachable`."""
    async with asyncio.timeout(20), hosts(config(1)) as (a,):
        async with hosts(config(2)) as (b,):
            await a.connect(b.listen_addrs[0])
            with pytest.raises(StreamRefused) as refused:
                await a.open_stream(b.peer_id, ECHO)  # b serves no echo: it answers `na`
            assert isinstance(refused.value, ProtocolNotSpoken)
        with pytest.raises(PeerUnreachable):  # stopped: its connection closes under the open
            await a.open_stream(b.peer_id, ECHO)
        with pytest.raises(PeerUnreachable):  # its address refuses the dial now
            await a.open_stream(b.peer_id, ECHO)
        with pytest.raises(PeerUnreachable):  # no such host runs: no address is known
            await a.open_stream(peer_id_from_seed(seed(9)), ECHO)


async def test_oversized_frame_is_rejected_and_the_host_keeps_working() -> None:
    small = 64 * 1024
    outcome: asyncio.Queue[BaseException | bytes] = asyncio.Queue()

    async def sink(stream: FrameStream) -> None:
        try:
            outcome.put_nowait(await stream.read_frame())
        except TooLarge as exc:
            outcome.put_nowait(exc)
            raise

    async with asyncio.timeout(8), hosts(config(1), config(2, max_frame_bytes=small)) as (a, b):
        b.set_stream_handler(SINK, sink)
        await a.connect(b.listen_addrs[0])
        stream = await a.open_stream(b.peer_id, SINK)
        await stream.write_frame(b"z" * (small + 1))  # a's limit is the default 1 MiB
        assert isinstance(await outcome.get(), TooLarge)
        with pytest.raises(StreamClosed):  # b reset the stream
            await stream.read_frame()
        await stream.close()

        later = await a.open_stream(b.peer_id, SINK)
        await later.write_frame(b"y" * small)
        assert await outcome.get() == b"y" * small
        await later.close()


async def test_same_seed_gives_the_same_peer_id_after_restart() -> None:
    async with asyncio.timeout(8):
        async with P2PHost(config(7)) as first:
            first_id = first.peer_id
            assert first.listen_addrs[0].endswith(f"/p2p/{first_id}")
        async with P2PHost(config(7)) as again, P2PHost(config(8)) as other:
            assert again.peer_id == first_id == peer_id_from_seed(seed(7))
            assert other.peer_id != first_id


def _multistream(message: str) -> bytes:
    data = (message + "\n").encode()
    return bytes([len(data)]) + data  # varint length: every message here is < 128 bytes


async def _propose_security(port: int, protocol: str) -> bytes:
    """Act as a dialer that offers only `protocol`; returns the listener's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_multistream("/multistream/1.0.0") + _multistream(protocol))
        await writer.drain()
        header = await reader.readexactly(1 + len("/multistream/1.0.0\n"))
        assert header[1:] == b"/multistream/1.0.0\n"
        length = (await reader.readexactly(1))[0]
        return (await reader.readexactly(length)).rstrip(b"\n")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_only_noise_is_offered_so_a_plaintext_dialer_cannot_connect() -> None:
    async with asyncio.timeout(8), P2PHost(config(1)) as host:
        port = int(host.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        for refused in ("/plaintext/2.0.0", "/plaintext/1.0.0", "/secio/1.0.0", "/tls/1.0.0"):
            assert await _propose_security(port, refused) == b"na"
        assert await _propose_security(port, "/noise") == b"/noise"


async def _next_message(sub: Subscription) -> GossipMessage:
    return await anext(sub)


async def test_gossip_reaches_the_other_hosts_and_validators_reject() -> None:
    asked: Counter[bytes] = Counter()

    def message_id(data: bytes) -> bytes:
        asked[data] += 1
        return hashlib.sha256(data).digest()

    refused: list[bytes] = []

    def valid(message: GossipMessage) -> bool:
        if message.data.startswith(b"bad"):
            refused.append(message.data)  # runs on the trio thread; list.append is atomic
            return False
        return True

    configs = [config(n, message_id=message_id) for n in (1, 2, 3)]
    # ~2 s alone; the mesh forms over heartbeats, which a busy machine stretches (a CI run of
    # the whole suite once took over 9 s to graft all six links).
    async with asyncio.timeout(30), hosts(*configs) as (a, b, c):
        a.set_topic_validator("hearthmesh/test/", valid)
        b.set_topic_validator("hearthmesh/test/", valid)
        # c has no validator: it will publish what a and b reject.
        await connect_all([a, b, c])
        subs = [await h.subscribe(TOPIC) for h in (a, b, c)]
        for host, others in ((a, (b, c)), (b, (a, c)), (c, (a, b))):
            for other in others:
                await host.wait_for_mesh_peer(TOPIC, other.peer_id)

        await a.publish(TOPIC, b"hello from a")
        for sub in (subs[1], subs[2]):
            got = await _next_message(sub)
            assert (got.origin, got.data, got.topic) == (a.peer_id, b"hello from a", TOPIC)
            assert got.msg_id == hashlib.sha256(b"hello from a").digest()

        with pytest.raises(LocalProtocolError):  # a's own validator refuses to publish it
            await a.publish(TOPIC, b"bad from a")
        await c.publish(TOPIC, b"good from c")
        for sub in (subs[0], subs[1]):
            assert (await _next_message(sub)).data == b"good from c"

        # The app's message id dedupes one payload published by two hosts.
        await a.publish(TOPIC, b"same envelope")
        await b.publish(TOPIC, b"same envelope")
        await a.publish(TOPIC, b"end a")
        await b.publish(TOPIC, b"end b")
        seen: list[bytes] = []
        while not {b"end a", b"end b"} <= set(seen):
            seen.append((await _next_message(subs[2])).data)
        assert seen.count(b"same envelope") == 1
        assert all(sub.dropped == 0 for sub in subs)
        while (own := subs[0].get_nowait()) is not None:  # a never hears its own publishes
            assert own.origin != a.peer_id
        # Each host works out a payload's id once, however often pubsub asks (up to 5 times).
        assert asked[b"hello from a"] == 3
        assert max(asked.values()) <= 3

        # Last, since a refused message lowers its sender's standing: c (no validator of its
        # own) publishes what a and b refuse; their validators see it, their apps never do.
        await c.publish(TOPIC, b"bad from c")
        while refused.count(b"bad from c") < 2:  # noqa: ASYNC110 - the validator has no event
            await asyncio.sleep(0.01)
        for sub in (subs[0], subs[1]):
            while (left := sub.get_nowait()) is not None:
                assert left.data != b"bad from c"

        await subs[2].unsubscribe()
        with pytest.raises(StopAsyncIteration):
            await _next_message(subs[2])


async def test_cancelled_open_stream_is_prompt_and_leaves_the_host_usable() -> None:
    # A TCP listener that never answers: the Noise handshake would hang for the 10 s dial timeout.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)
    blackhole.setblocking(False)
    port = blackhole.getsockname()[1]
    silent_peer = peer_id_from_seed(seed(99))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
            b.set_stream_handler(ECHO, echo)
            await a.add_peer_address(f"/ip4/127.0.0.1/tcp/{port}/p2p/{silent_peer}")
            # Prompt: the cancel, not the dial's own timeout (10 s), ends the dial, and closes
            # its socket (the listener reads its multistream hello, then the end). Not a clock
            # read against 1 s: a loaded machine may take that long to hop and unwind.
            async with asyncio.timeout(5):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await a.open_stream(silent_peer, ECHO)
                dialled, _ = await loop.sock_accept(blackhole)
                with dialled:
                    while await loop.sock_recv(dialled, 4096):
                        pass

            await a.connect(b.listen_addrs[0])
            async with await a.open_stream(b.peer_id, ECHO) as stream:
                await stream.write_frame(b"still alive")
                assert await stream.read_frame() == b"still alive"
    finally:
        blackhole.close()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _cycle(first: int) -> None:
    async with hosts(config(first), config(first + 1)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        await a.connect(b.listen_addrs[0])
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frame(b"ping")
            assert await stream.read_frame() == b"ping"
        sub = await b.subscribe(TOPIC)
        await a.publish(TOPIC, b"x")
        assert not sub.ended


async def test_stopping_hosts_leaks_no_threads_fds_or_tasks() -> None:
    async with asyncio.timeout(9):
        await _cycle(10)  # warm-up: lazy imports, loggers, the loop's own sockets
        threads, fds = threading.active_count(), _fd_count()
        for first in (20, 30, 40):
            await _cycle(first)
        assert threading.active_count() == threads
        assert _fd_count() == fds
        assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.usefixtures("mdns_alone")
async def test_mdns_finds_and_connects_peers() -> None:
    # Measured here: each mDNS host takes ~1.6 s to start (zeroconf probing), peers are found
    # by then, and stopping adds ~250 ms per host.
    mdns = [config(n, enable_mdns=True) for n in (1, 2)]
    async with asyncio.timeout(9), hosts(*mdns) as (a, b):
        await a.wait_connected(b.peer_id)
        await b.wait_connected(a.peer_id)


async def test_a_chat_over_quic_only() -> None:
    quic = "/ip4/127.0.0.1/udp/0/quic-v1"
    async with (
        asyncio.timeout(10),
        hosts(config(1, listen_addrs=[quic]), config(2, listen_addrs=[quic])) as (a, b),
    ):
        assert all("/quic-v1/" in addr for addr in a.listen_addrs + b.listen_addrs)
        b.set_stream_handler(ECHO, echo)
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frames([b"over", b"quic"])
            assert [await stream.read_frame(), await stream.read_frame()] == [b"over", b"quic"]


async def test_listening_on_every_interface_lists_each_interface_address() -> None:
    async with asyncio.timeout(8), hosts(config(1, listen_addrs=["/ip4/0.0.0.0/tcp/0"])) as [a]:
        assert a.listen_addrs and not any("/0.0.0.0/" in addr for addr in a.listen_addrs)
        assert not any("/127.0.0.1/" in addr for addr in a.listen_addrs)
        async with hosts(config(2, listen_addrs=["/ip4/0.0.0.0/tcp/0"])) as [b]:
            assert await b.connect(a.listen_addrs[0]) == a.peer_id


class _Muxed:
    """The parts of a libp2p connection the tracker reads: the peer and transport addresses."""

    def __init__(self, peer: str, addrs: list[str]) -> None:
        self.peer_id = ID.from_base58(peer)
        self.addrs = addrs

    def get_transport_addresses(self) -> list[str]:
        return list(self.addrs)


class _Conn:
    def __init__(self, muxed: _Muxed) -> None:
        self.muxed_conn = muxed


async def test_a_host_without_autonat_checks_asks_no_peer_until_told() -> None:
    """`autonat_checks=False` (SPEC §10.6): the host runs no rounds of its own, so a new
    connection carries none of its AutoNAT streams, yet it still answers the peer's round and
    an explicit `check_reachability` still asks."""
    quiet = config(1, autonat_checks=False, autonat_confirmations=1)
    asker = config(2, autonat_confirmations=1, autonat_loopback=True)
    async with asyncio.timeout(20), hosts(quiet, asker) as (a, b):
        await b.connect(a.listen_addrs[0])
        # b's round, started by the same connection as a's would be, got its verdict from a.
        await wait_until(lambda: b.reachability is Reachability.PUBLIC)
        assert a.reachability is Reachability.UNKNOWN
        assert await a.check_reachability() is Reachability.PUBLIC


async def test_autonat_rounds_and_dial_backs_are_counted_and_metered_apart() -> None:
    """SPEC §20.6: a host's status counts its AutoNAT rounds and the dial-backs it served for
    a peer, each with the CPU of its own task steps, so a scale run can take them out of a
    phase's CPU (fails if the jobs go uncounted or their steps unmetered)."""
    asker = config(1, autonat_confirmations=1, autonat_loopback=True)
    server = config(2, autonat_checks=False)
    async with asyncio.timeout(20), hosts(asker, server) as (b, a):
        assert b.wire()["periodic"]["autonat_round"] == {"runs": 0, "cpu_s": 0.0}
        await b.connect(a.listen_addrs[0])
        await wait_until(lambda: b.reachability is Reachability.PUBLIC)
        rounds, served = b.wire()["periodic"], a.wire()["periodic"]
        assert rounds["autonat_round"]["runs"] >= 1 and rounds["autonat_round"]["cpu_s"] > 0
        assert served["autonat_dial_back"]["runs"] >= 1
        assert served["autonat_dial_back"]["cpu_s"] > 0  # its Noise handshake, at least
        assert served["autonat_round"]["runs"] == 0  # a host without checks runs none
        assert rounds["autonat_dial_back"]["runs"] == 0


async def test_a_connection_closes_under_the_path_it_opened_with() -> None:
    """A relayed connection whose circuit address is gone when it closes (py-libp2p reads a
    connection's addresses from the peerstore when it has none of its own) leaves no path
    behind: the close counts against the path the connection was opened under."""
    relay, peer = peer_id_from_seed(seed(7)), peer_id_from_seed(seed(8))
    reports: list[tuple[str, int, str | None, str | None]] = []
    network = cast(INetwork, None)
    tracker = _ConnectionTracker(
        network, lambda p, delta, _ip, path, closed: reports.append((p, delta, path, closed))
    )
    muxed = _Muxed(peer, [f"/p2p/{relay}/p2p-circuit/p2p/{peer}"])
    conn = cast(INetConn, _Conn(muxed))
    await tracker.connected(network, conn)
    muxed.addrs = []  # what the connection says by the time it closes
    await tracker.disconnected(network, conn)
    assert reports == [(peer, 1, relay, None), (peer, -1, relay, CLOSED_BY_PEER)]


async def test_a_connection_we_close_is_counted_out_with_our_reason() -> None:
    """SPEC §10.13: each close counts under why: ours (marked before we close it) or the
    peer's; a mark on a connection never counted in is not kept."""
    peer = peer_id_from_seed(seed(8))
    reports: list[tuple[int, str | None]] = []
    network = cast(INetwork, None)
    tracker = _ConnectionTracker(
        network, lambda _p, delta, _ip, _path, closed: reports.append((delta, closed))
    )
    conn, other = (cast(INetConn, _Conn(_Muxed(peer, []))) for _ in range(2))
    tracker.closing(other, CLOSED_REFUSED)  # not counted in: nothing would take the mark
    await tracker.connected(network, conn)
    tracker.closing(conn, CLOSED_UNANSWERED)
    await tracker.disconnected(network, conn)
    await tracker.connected(network, other)
    await tracker.disconnected(network, other)
    assert reports == [(1, None), (-1, CLOSED_UNANSWERED), (1, None), (-1, CLOSED_BY_PEER)]


async def test_a_connection_listed_before_it_is_announced_passes_the_budget_once() -> None:
    """SPEC §11.6.6: the once-a-second reconcile may list a connection before libp2p announces
    it; the budget judges it there (a connection past it is never counted in), and the
    announcement that follows does not judge it again."""
    admitted, refused = (peer_id_from_seed(seed(n)) for n in (8, 9))
    conns = [cast(INetConn, _Conn(_Muxed(peer, []))) for peer in (admitted, refused)]
    for conn in conns:
        cast(Any, conn).is_closed = False
    asked: list[str] = []

    def admits(conn: INetConn) -> bool:
        peer = conn.muxed_conn.peer_id.to_base58()
        asked.append(peer)
        return peer == admitted

    reports: list[tuple[str, int]] = []
    network = cast(INetwork, SimpleNamespace(get_connections=lambda: list(conns)))
    tracker = _ConnectionTracker(
        network, lambda p, delta, _ip, _path, _closed: reports.append((p, delta)), admits
    )
    tracker._reconcile()  # both listed, neither announced yet
    for conn in conns:
        await tracker.connected(network, conn)  # the announcements, late
    tracker._reconcile()
    assert sorted(asked) == sorted([admitted, refused])  # each judged once
    assert reports == [(admitted, 1)]  # the one past its budget never counted in


async def test_a_stream_takes_the_path_its_connection_was_counted_under() -> None:
    """A stream's path is read from the tracker, once per connection, not from the connection
    at each stream open: a relayed connection whose circuit address is gone by then is still
    relayed (a connection has one path for its life)."""
    relay, peer = peer_id_from_seed(seed(7)), peer_id_from_seed(seed(8))
    network = cast(INetwork, None)
    tracker = _ConnectionTracker(network, lambda *_: None)
    muxed = _Muxed(peer, [f"/p2p/{relay}/p2p-circuit/p2p/{peer}"])
    conn = cast(INetConn, _Conn(muxed))
    await tracker.connected(network, conn)
    muxed.addrs = []  # what the connection says of itself later
    stream = cast(INetStream, SimpleNamespace(swarm_conn=conn))
    assert _LibP2PStream(stream, tracker).path == relay


async def test_a_closed_connection_libp2p_still_lists_does_not_stop_a_dial() -> None:
    """SPEC §11.5.2: libp2p may keep listing a connection that closed (seen after kill -9s and
    a partition in `simulate` R1); while it does, its connect returns at once and a stream
    open fails with "no valid connections" without dialling. The host drops such a listing
    before a connect or a stream open, so the peer is dialled afresh."""
    async with asyncio.timeout(40), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        assert await a.connect(b.listen_addrs[0]) == b.peer_id

        async def close_unlisted() -> int:
            """Mark a's connections to b closed, as libp2p does, but leave them listed."""
            swarm = a._require_host().get_network()
            listed = swarm.get_connections(ID.from_base58(b.peer_id))
            for connection in listed:
                cast(Any, connection).event_closed.set()
            return len(listed)

        assert await a._bridge.run(close_unlisted) >= 1
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frame(b"after")
            assert await stream.read_frame() == b"after"

        assert await a._bridge.run(close_unlisted) >= 1
        assert await a.connect(b.listen_addrs[0]) == b.peer_id  # dials, does not return at once
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frame(b"again")
            assert await stream.read_frame() == b"again"


async def test_a_second_connection_libp2p_trims_is_counted_out_as_trimmed() -> None:
    """SPEC §10.13: with `max_connections_per_peer` 1, a second connection to a peer makes
    libp2p close one of the two (past its grace period). That close is ours, `trimmed`; before,
    it counted as `peer_or_transport` on both ends, like a peer that went away (the closes
    in 50-node runs could not be told apart)."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        assert await a.connect(b.listen_addrs[0]) == b.peer_id

        async def dial_again() -> None:
            swarm = cast(Any, a._require_host().get_network())
            swarm.connection_config.grace_period = 0.0  # the first is trimmable at once
            await swarm.dial_addr(multiaddr.Multiaddr(b.listen_addrs[0]), ID.from_base58(b.peer_id))

        await a._bridge.run(dial_again)
        await wait_until(lambda: sum(a.connections_closed.values()) == 1)
        assert a.connections_closed == {CLOSED_TRIMMED: 1}
        await wait_until(lambda: sum(b.connections_closed.values()) == 1)
        assert b.connections_closed == {CLOSED_BY_PEER: 1}
        assert a.connected_peers() == [b.peer_id]


async def test_a_connection_libp2p_drops_without_a_disconnected_call_is_counted_out() -> None:
    """libp2p drops a connection from its list without closing it or notifying (a second one
    to a peer over `max_connections_per_peer`), and a close cancelled on its way never
    notifies: the peer must not stay in `connected_peers` for good (a banned peer that kept
    dialling did, SPEC §11.6). The count follows libp2p's list within `RECONCILE_S`."""
    async with asyncio.timeout(20), hosts(config(1), config(2)) as (a, b):
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        assert b.peer_id in a.connected_peers()

        async def unlist() -> int:
            swarm = cast(Any, a._require_host().get_network())
            listed = swarm.get_connections(ID.from_base58(b.peer_id))
            for connection in listed:
                swarm.remove_conn(connection)  # libp2p's own: unlisted, open, no notification
            return len(listed)

        assert await a._bridge.run(unlist) >= 1
        while b.peer_id in a.connected_peers():  # noqa: ASYNC110 - the count has no event
            await asyncio.sleep(0.05)
        assert b.peer_id not in a.peer_paths()


def test_libp2ps_errors_that_a_peer_causes_are_demoted_and_others_stay_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stranger resetting an AutoNAT request makes libp2p log an empty ERROR; logs stay
    readable (DEBUG), while an ERROR we did not name still shows."""
    _configure_libp2p_logging()
    caplog.set_level(logging.INFO)
    autonat = logging.getLogger("libp2p.host.autonat.autonat")
    autonat.error("Error handling AutoNAT stream: %s", "")
    autonat.error("something else broke")
    shown = {(r.levelno, r.getMessage()) for r in caplog.records}
    assert shown == {(logging.ERROR, "something else broke")}


async def test_a_hosts_dial_retry_pause_is_its_configs_and_py_libp2ps_by_default() -> None:
    """The swarm's first pause before retrying a failed dial is `dial_retry_delay_s` (the test
    nodes shorten it: their away homes' refused dials held each send ~0.7 s); by default it
    stays py-libp2p's, with its count of retries."""
    async with hosts(config(1), config(2, dial_retry_delay_s=0.01)) as (default, short):
        for host, pause_s in ((default, RetryConfig().initial_delay), (short, 0.01)):
            retry = cast(Any, host._require_host().get_network()).retry_config
            assert (retry.initial_delay, retry.max_retries) == (pause_s, RetryConfig().max_retries)
