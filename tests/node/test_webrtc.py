"""The WebRTC adapter (node/p2p/webrtc.py, SPEC §10.11): predicted candidates, and an upgrade
between two real hosts on this machine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from libp2p.peer.id import ID
from libp2p.transport.webrtc.connection import WebRTCConnection
from libp2p.transport.webrtc.signaling_pb.signaling_pb2 import SignalingMessage
from libp2p.transport.webrtc.stream import StreamState, WebRTCStream
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import StreamClosed, StreamOpenFailed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.p2p.webrtc import (
    MAX_SIGNALING_BYTES,
    SIGNALING_PROTOCOL,
    is_webrtc,
    with_predicted_candidates,
)
from hearthmesh.node.p2p.webrtc_connection import READ_AHEAD_MESSAGES, WebRtcConnection
from hearthmesh.protocol.errors import ErrorCode, RemoteProtocolError
from hearthmesh.protocol.inbound import InboundLedger, InboundPolicy
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile.peer import HostilePeer
from tests.integration.conftest import wait_until
from tests.node.pubsub_streams import gossip_streams_on_their_connection
from tests.node.refusals import RefusalLog
from tests.node.test_libp2p_host import ECHO, config, echo, hosts

pytestmark = pytest.mark.integration

SDP = (
    "v=0\r\n"
    "a=candidate:abc 1 udp 2130706431 192.168.1.2 40000 typ host\r\n"
    "a=candidate:def 1 udp 2130706431 fe80::1 40001 typ host\r\n"
    "a=end-of-candidates\r\n"
)


def test_each_ipv4_host_candidate_gets_one_at_each_public_ip_with_its_port() -> None:
    out = with_predicted_candidates(SDP, ["203.0.113.7", "2001:db8::1"]).splitlines()
    added = [line for line in out if "typ srflx" in line]
    assert added == [
        "a=candidate:abcp0 1 udp 1694498815 203.0.113.7 40000"
        " typ srflx raddr 192.168.1.2 rport 40000"
    ]
    assert out.index(added[0]) < out.index("a=end-of-candidates")


def test_no_public_ip_or_one_equal_to_the_host_leaves_the_sdp_as_it_was() -> None:
    assert with_predicted_candidates(SDP, []) == SDP
    assert with_predicted_candidates(SDP, ["192.168.1.2"]) == SDP


async def test_two_hosts_upgrade_to_webrtc_once_and_streams_still_flow() -> None:
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        await a.connect(b.listen_addrs[0])
        await b.wait_connected(a.peer_id)
        assert await a.upgrade_to_webrtc(b.peer_id)
        assert "webrtc" in a.peer_paths()[b.peer_id]
        assert not await b.upgrade_to_webrtc(a.peer_id)  # one WebRTC connection per peer
        assert a.hole_punches.direct == {"webrtc": 1}
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frames([b"over", b"webrtc"])
            assert [await stream.read_frame(), await stream.read_frame()] == [b"over", b"webrtc"]


async def test_a_webrtc_connection_its_peer_closes_is_closed_here_too() -> None:
    """The peer closes its end (as the fallback's offerer does once a punch went direct late):
    ours closes with it and leaves the paths, so no stream is opened on a dead connection and
    the direct one carries on alone (SPEC §10.11)."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        await a.connect(b.listen_addrs[0])
        await b.wait_connected(a.peer_id)
        assert await a.upgrade_to_webrtc(b.peer_id)
        await wait_until(lambda: "webrtc" in b.peer_paths().get(a.peer_id, []))

        async def close_webrtc(host: P2PHost, peer: str) -> int:
            assert host._host is not None
            ours = [c for c in host._host.get_network().get_connections(ID.from_base58(peer))]
            for conn in [c for c in ours if is_webrtc(c)]:
                await conn.close()
            return sum(is_webrtc(c) for c in ours)

        assert await b._bridge.run(close_webrtc, b, a.peer_id) == 1
        await wait_until(lambda: a.peer_paths().get(b.peer_id) == ["direct"])
        b.set_stream_handler(ECHO, echo)
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            await stream.write_frames([b"direct", b"again"])
            assert [await stream.read_frame(), await stream.read_frame()] == [b"direct", b"again"]


async def webrtc_only(a: P2PHost, b: P2PHost) -> WebRTCConnection:
    """`a` upgraded to WebRTC to `b`, its TCP connection closed: `a`'s WebRTC connection, once
    each host's gossip stream to the other has moved onto it (SPEC §14.3). Those two streams
    are the connection's own, not a test's: with no topic joined, they write nothing after the
    greeting."""
    await a.connect(b.listen_addrs[0])
    await b.wait_connected(a.peer_id)
    assert await a.upgrade_to_webrtc(b.peer_id)

    async def keep_webrtc(host: P2PHost, peer: str) -> WebRTCConnection:
        assert host._host is not None
        kept = None
        for conn in host._host.get_network().get_connections(ID.from_base58(peer)):
            if is_webrtc(conn):
                kept = conn.muxed_conn
            else:
                await conn.close()
        assert isinstance(kept, WebRTCConnection)
        return kept

    webrtc = await a._bridge.run(keep_webrtc, a, b.peer_id)
    await wait_until(lambda: a.peer_paths().get(b.peer_id) == ["webrtc"])
    # and no other stream left (one a peer opens as a connection comes, as identify's, ends)
    await wait_until(lambda: gossip_streams_on_their_connection(a, b) and len(webrtc._streams) == 2)
    return webrtc


def _gossip_channels(webrtc: WebRTCConnection) -> set[int]:
    """The data channels of the gossip streams `webrtc_only` left on `webrtc`, the only ones."""
    return set(webrtc._streams)


async def _echo_once(a: P2PHost, b: P2PHost, frame: bytes) -> None:
    async with asyncio.timeout(5), await a.open_stream(b.peer_id, ECHO) as stream:
        await stream.write_frame(frame)
        assert await stream.read_frame() == frame


async def test_two_hosts_joined_by_webrtc_alone_gossip_over_it() -> None:
    """Two hosts meshed over TCP are left joined by WebRTC alone: each one's gossip stream
    moves onto it (SPEC §14.3), and a message published then arrives. Before, both streams
    stayed on the closed connection and that message was lost (a write into them failed)."""
    topic = "hearthmesh/test/webrtc"
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        await a.connect(b.listen_addrs[0])
        async with await a.subscribe(topic) as sub, await b.subscribe(topic):
            await b.wait_for_mesh_peer(topic, a.peer_id)
            await webrtc_only(a, b)
            await b.publish(topic, b"over webrtc")
            async with asyncio.timeout(10):
                assert (await sub.get()).data == b"over webrtc"
        assert a.peer_paths()[b.peer_id] == ["webrtc"]


async def test_a_stream_whose_peer_answers_before_its_channel_is_handed_back_still_opens() -> None:
    """The peer's multistream-select answers as soon as the data channel opens; an answer that
    arrives before the trio thread resumes from creating the channel (a loaded machine) reaches
    the stream, which negotiates and carries frames (SPEC §10.11)."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        webrtc = await webrtc_only(a, b)
        created = webrtc._create_channel_cb

        async def created_then_slow(channel_id: int, label: str) -> None:  # the asyncio loop
            await created(channel_id, label)
            await asyncio.sleep(0.5)  # the peer's answer comes meanwhile

        webrtc._create_channel_cb = created_then_slow
        await _echo_once(a, b, b"answered early")


async def test_a_webrtc_connection_carries_more_streams_in_turn_than_it_holds_at_once() -> None:
    """An ended stream frees its place: a connection that holds at most 8 streams at once
    beside its 2 gossip streams carries 40 in turn, and a 9th open at once is refused (SPEC
    §10.11)."""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        webrtc = await webrtc_only(a, b)
        gossip = _gossip_channels(webrtc)
        # py-libp2p's bound (256), made small; the gossip streams count in it too
        webrtc._config.max_concurrent_streams = 8 + len(gossip)
        for number in range(40):
            await _echo_once(a, b, b"%d" % number)
        # the last echo's stream ends once the peer's close comes back: then its place is free
        await wait_until(lambda: set(webrtc._streams) == gossip)
        held = [await a.open_stream(b.peer_id, ECHO) for _ in range(8)]
        with pytest.raises(StreamOpenFailed):
            await a.open_stream(b.peer_id, ECHO)
        for stream in held:
            await stream.close()
        await _echo_once(a, b, b"after")


BURST = "/hearthmesh/test-burst/1"


def _muxed(stream: FrameStream) -> WebRTCStream:
    """The data channel's stream under `stream` (a FrameStream over libp2p over WebRTC)."""
    muxed = stream._raw._stream.muxed_stream  # type: ignore[attr-defined]
    assert isinstance(muxed, WebRTCStream)
    return muxed


def _frames(count: int) -> list[bytes]:
    return [b"%d" % number for number in range(count)]


def _wire_bytes(frames: list[bytes]) -> int:
    """What `frames` take in a stream's read buffer: each with its u32 length (SPEC §10.2)."""
    return sum(4 + len(frame) for frame in frames)


@dataclass(frozen=True, slots=True)
class Burst:
    """A stream the peer wrote a burst on, our connection's read budget, the peer (the key its
    bytes count under), and our host's standing of its peers (fed by the host's refusals)."""

    stream: FrameStream
    budget: InboundLedger
    peer: str
    standing: PeerStanding
    refusals: list[str]
    """Each refusal the host reported, as `peer: error` (the assertions' evidence)."""
    channel: Any
    """The stream's aiortc data channel."""

    def drained(self) -> bool:
        """The channel's SCTP stream is reset both ways (aiortc forgets it then): nothing the
        peer wrote on it is in flight any more, so no charge for it can still come."""
        return self.channel not in self.channel.transport._data_channels.values()


_GREETED = "hearthmesh/test/webrtc-greeted"


def _knows_subscribed(host: P2PHost, peer: str, topic: str) -> bool:
    """`host`'s gossip has read `peer`'s subscription to `topic` (from the peer's stream)."""
    pubsub = host._gossip._pubsub
    assert pubsub is not None
    return ID.from_base58(peer) in pubsub.peer_topics.get(topic, ())


@asynccontextmanager
async def burst_unread(
    count: int, *, budget_per_peer: int | None = None, budget_in_all: int | None = None
) -> AsyncIterator[Burst]:
    """Two hosts over WebRTC alone, and a stream on which the peer wrote `count` small frames
    (a data channel message each, until a write failed) that nothing has read yet: the only
    stream of the connection beside the gossip streams, whose greetings were read before the
    budget is set and which write nothing more (`webrtc_only`), so the peer's share of the
    budget is the burst's alone."""
    written = asyncio.Event()

    async def burst(stream: FrameStream) -> None:
        await stream.read_frame()
        try:
            for frame in _frames(count):
                await stream.write_frame(frame)
        finally:  # (a write after our reset fails)
            written.set()
        await asyncio.sleep(30)  # the test ends the stream

    # No AutoNAT rounds on either host: each (every 5 s while reachability is unknown, as
    # between two hosts on this machine) opens a stream to the peer whose 98-byte request or
    # answer counts in the same per-peer budget as the burst: a budget of a few frames was
    # overflowed by it too, a second charge, and the request was seen unread after the reset.
    async with hosts(config(1, autonat_checks=False), config(2, autonat_checks=False)) as (a, b):
        standing = PeerStanding(
            clock=SystemClock(),
            own_peer=a.peer_id,
            protected=lambda _: False,
            disconnect=lambda _: None,
        )
        refusals: list[str] = []

        def refused(
            peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
        ) -> None:
            refusals.append(f"{peer}: {error!r}")
            standing.refused(peer, error, protocol=protocol, whole_frame=whole_frame)

        a.set_refusal_handler(refused)
        b.set_stream_handler(BURST, burst)
        webrtc = await webrtc_only(a, b)
        assert isinstance(webrtc, WebRtcConnection)
        budget = webrtc.read_budget
        # The greeting `b`'s gossip stream brings onto WebRTC (its record, ~210 bytes) held
        # under a budget of a few frames is refused, a second charge ('0 bytes held unread
        # already'), and `webrtc_only` returns once that stream is open, maybe before its
        # greeting came: an empty buffer alone said nothing. So `b` subscribes, and once `a`
        # knows it, the greeting before it on that stream has been read too.
        async with await b.subscribe(_GREETED):
            await wait_until(lambda: _knows_subscribed(a, b.peer_id, _GREETED))
            await wait_until(lambda: budget.buffered_bytes_of(b.peer_id) == 0)
            default = InboundPolicy()
            budget.policy = InboundPolicy(
                max_buffered_bytes_per_peer=budget_per_peer or default.max_buffered_bytes_per_peer,
                max_buffered_bytes=budget_in_all or default.max_buffered_bytes,
            )
            budget.peak_buffered_bytes = budget.buffered_bytes  # the peak under this policy
            async with await a.open_stream(b.peer_id, BURST) as stream:
                channel = webrtc._channels[_muxed(stream).channel_id]  # (open until "go")
                await stream.write_frame(b"go")
                await written.wait()
                yield Burst(stream, budget, b.peer_id, standing, refusals, channel)


async def test_a_burst_its_reader_is_behind_on_arrives_whole() -> None:
    """A data channel has no flow control: what the peer wrote while nothing read waits in the
    stream (up to READ_AHEAD_MESSAGES), not a frame lost, and leaves the budget as it is read
    (SPEC §10.11)."""
    frames = _frames(100)
    async with asyncio.timeout(30), burst_unread(len(frames)) as burst:
        budget, peer = burst.budget, burst.peer
        await wait_until(lambda: budget.buffered_bytes_of(peer) == _wire_bytes(frames))
        assert [await burst.stream.read_frame() for _ in frames] == frames
        assert budget.buffered_bytes_of(peer) == 0
        assert burst.standing.points(peer) == 0


async def test_a_burst_past_the_read_ahead_resets_the_stream_and_leaves_no_gap() -> None:
    """...and charges the peer, as one item (SPEC §10.11, §11.6)."""
    async with asyncio.timeout(30), burst_unread(READ_AHEAD_MESSAGES + 20) as burst:
        muxed = _muxed(burst.stream)
        await wait_until(lambda: muxed._state is StreamState.RESET)
        with pytest.raises(StreamClosed):
            await burst.stream.read_frame()
        assert (
            burst.budget.buffered_bytes_of(burst.peer) == 0
        )  # what nobody will read is given back
        await wait_until(lambda: burst.standing.points(burst.peer) > 0 and burst.drained())
        assert burst.standing.points(burst.peer) <= StandingPolicy().item_points, burst.refusals


async def test_a_peer_past_its_read_budget_has_its_stream_reset_and_is_charged() -> None:
    """Bytes a peer makes our WebRTC streams hold unread are bounded per peer (and in all),
    whatever the messages' count; past its own share the peer is charged as for one refused
    item (SPEC §10.11, §11.6)."""
    budget_bytes = _wire_bytes(_frames(30))
    async with asyncio.timeout(30), burst_unread(60, budget_per_peer=budget_bytes) as burst:
        muxed = _muxed(burst.stream)
        await wait_until(lambda: muxed._state is StreamState.RESET)
        assert burst.budget.peak_buffered_bytes <= budget_bytes
        assert burst.budget.buffered_bytes_of(burst.peer) == 0
        await wait_until(lambda: burst.standing.points(burst.peer) > 0 and burst.drained())
        assert burst.standing.points(burst.peer) <= StandingPolicy().item_points, burst.refusals


async def test_a_stream_past_the_budget_of_all_peers_is_reset_at_no_ones_cost() -> None:
    """The budget over all peers full is no one peer's excess: `BUSY`, no charge (§10.4)."""
    budget_bytes = _wire_bytes(_frames(30))
    async with asyncio.timeout(30), burst_unread(60, budget_in_all=budget_bytes) as burst:
        muxed = _muxed(burst.stream)
        await wait_until(lambda: muxed._state is StreamState.RESET)
        assert burst.budget.peak_buffered_bytes <= budget_bytes
        await wait_until(lambda: bool(burst.refusals))  # the host reports the reset: Busy ...
        assert "Busy" in burst.refusals[0], burst.refusals
        assert burst.standing.points(burst.peer) == 0  # ... which costs nothing


async def test_an_ended_streams_data_channel_is_closed_and_its_stream_id_used_again() -> None:
    """A stream's data channel is closed at its end (an SCTP stream reset, both ways), so the
    next stream takes the lowest free SCTP stream id again: 40 streams in turn use a few ids.
    Left open, every stream took a new one, and a connection had 32,767 streams of one side in
    its life before its 65,535 ids ran out (SPEC §10.11). (Reaching that many takes minutes;
    what is checked is that the ids are used again and nothing of an ended stream is kept.)"""
    async with asyncio.timeout(30), hosts(config(1), config(2)) as (a, b):
        b.set_stream_handler(ECHO, echo)
        webrtc = await webrtc_only(a, b)
        assert isinstance(webrtc, WebRtcConnection)
        gossip = _gossip_channels(webrtc)
        used: set[int] = set()
        transports = set()
        for number in range(40):
            frame = b"%d" % number
            async with asyncio.timeout(5), await a.open_stream(b.peer_id, ECHO) as stream:
                await stream.write_frame(frame)
                assert await stream.read_frame() == frame
                channel = webrtc._channels[_muxed(stream).channel_id]
                used.add(channel.id)
                transports.add(channel.transport)
        [sctp] = transports
        await wait_until(lambda: set(webrtc._channels) == gossip)
        kept = [webrtc._channels[channel] for channel in gossip]
        await wait_until(
            lambda: all(c.negotiated or c in kept for c in sctp._data_channels.values())
        )
        assert len(used) < 10, sorted(used)  # py-libp2p alone: 40 ids, 2 to 80


def _signal(kind: SignalingMessage.Type, data: bytes) -> bytes:
    return encode_varint_prefixed(SignalingMessage(type=kind, data=data).SerializeToString())


_WITH_CHANNEL = b"v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
OFFERS: list[tuple[str, bytes, ErrorCode]] = [
    ("bytes that are no signaling message", encode_varint_prefixed(b"\x0f"), ErrorCode.MALFORMED),
    (
        "a length over the bound",
        encode_uvarint(MAX_SIGNALING_BYTES + 1) + b"\0" * 64,
        ErrorCode.TOO_LARGE,
    ),
    (
        "an answer where the offer is due",
        _signal(SignalingMessage.SDP_ANSWER, _WITH_CHANNEL),
        ErrorCode.MALFORMED,
    ),
    (
        "an SDP that is not UTF-8",
        _signal(SignalingMessage.SDP_OFFER, b"\xff\xfe" + _WITH_CHANNEL),
        ErrorCode.MALFORMED,
    ),
    (
        "an SDP without a data channel",
        _signal(SignalingMessage.SDP_OFFER, b"v=0\r\ns=-\r\n"),
        ErrorCode.MALFORMED,
    ),
]
"""Offers no honest peer sends, each with the code it costs (SPEC §10.11)."""


async def _within(seconds: float, predicate: Callable[[], bool]) -> bool:
    """Whether `predicate` came true within `seconds` (a missing charge then shows in the
    test's assertion, not as its timeout)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wait_until(predicate)
    return predicate()


async def test_an_offer_no_honest_peer_sends_is_charged_and_one_cut_short_is_not() -> None:
    """SPEC §10.11, §11.6.1: each malformed offer on the signaling stream costs the kit a
    whole frame with its code, in the order sent, and the stream is closed; an offer cut
    short (the kit gave up and reset the stream, as a departing peer does) costs nothing.
    The last push, sent until it is charged, shows the one cut short was judged before it."""
    log = RefusalLog()
    refusals = log.seen

    async with asyncio.timeout(40), P2PHost(config(1)) as victim, HostilePeer(answer_s=1.0) as kit:
        victim.set_refusal_handler(log)
        await kit.connect(victim.listen_addrs[0])
        outcomes = [
            (await kit.request(victim.peer_id, SIGNALING_PROTOCOL, raw, framed=False)).outcome
            for _, raw, _ in OFFERS
        ]
        assert outcomes == ["closed"] * len(OFFERS)
        cut_short = encode_uvarint(100) + b"\0" * 10
        reply = await kit.request(victim.peer_id, SIGNALING_PROTOCOL, cut_short, framed=False)
        assert reply.outcome == "no-answer"
        expected = [(kit.peer_id, code, True) for _, _, code in OFFERS]
        await _within(10, lambda: len(refusals) >= len(expected))
        sentinel = OFFERS[0][1]
        for _ in range(50):  # refused unjudged while the one cut short is still in hand
            await kit.request(victim.peer_id, SIGNALING_PROTOCOL, sentinel, framed=False)
            if await _within(0.5, lambda: len(refusals) > len(expected)):
                break
        assert refusals == [*expected, (kit.peer_id, ErrorCode.MALFORMED, True)]
        assert log.protocols == {SIGNALING_PROTOCOL}


async def test_an_answer_no_honest_peer_sends_is_charged_to_the_peer_we_offered() -> None:
    """SPEC §10.11: the offerer judges the answer as the answerer judges the offer. The kit,
    offered WebRTC, answers with an offer of its own: the upgrade fails and the kit pays a
    whole frame (`MALFORMED`)."""
    log = RefusalLog()
    refusals = log.seen

    async def answer_with_an_offer(stream: FrameStream) -> None:
        await stream.read_bytes()  # the victim's offer
        await stream.write_bytes(_signal(SignalingMessage.SDP_OFFER, _WITH_CHANNEL))
        await stream.read_bytes()  # until the victim ends it

    async with asyncio.timeout(40), P2PHost(config(1)) as victim, HostilePeer() as kit:
        victim.set_refusal_handler(log)
        kit.host.set_stream_handler(SIGNALING_PROTOCOL, answer_with_an_offer)
        await kit.connect(victim.listen_addrs[0])
        await victim.wait_connected(kit.peer_id)
        assert not await victim.upgrade_to_webrtc(kit.peer_id)
        await _within(10, lambda: bool(refusals))
        assert refusals == [(kit.peer_id, ErrorCode.MALFORMED, True)]
        assert log.protocols == {SIGNALING_PROTOCOL}
