"""WebRTC for `P2PHost`: the UDP path between two private nodes whose NATs defeat TCP hole
punching (SPEC §10.11).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); its objects
live on the trio thread, except the aiortc peer connections, which run on py-libp2p's own
asyncio bridge thread (`AsyncioBridge`). State owned: our DTLS certificate and the bridge (both
made by the first upgrade: aiortc and PyAV under it weigh 30 MB), the budget of bytes its
connections' streams hold unread (`webrtc_connection.py`), and the upgrades in progress
(at most one per peer, `MAX_UPGRADES` in all); each upgrade's outcome is reported, and counted
by `P2PHost` as a hole punch on transport `"webrtc"`.

Thin adapter over py-libp2p 0.8.1's `libp2p.transport.webrtc`, whose private-to-private dial
raises `NotImplementedError` (`private_transport.py`, `dial`) and whose listener reads the
offer and drops it (`private_listener.py`, `_handle_signaling_stream`). We reuse what works
there: the `/webrtc-signaling/0.0.1` messages (`SignalingSession`), the aiortc peer connection
with our certificate, the Noise XX handshake on data channel 0, and `WebRTCConnection` (a data
channel per libp2p stream), which we hand to the swarm like any connection. What we add:
- the offer/answer exchange on a signaling stream over the relayed connection we already have
  (no `/webrtc` address is dialled: like DCUtR, this upgrades a relayed connection);
- predicted server-reflexive candidates: our NAT's public IP as peers observe it, with each
  host candidate's port (a NAT that keeps a source port maps it so), since the mesh runs no
  STUN server of its own; where `stun_servers` are configured, ICE also asks them (a NAT that
  maps a port to another one, the same for every destination, SPEC §10.16);
- the answerer is the Noise initiator and the offerer's certificate is the "dialer"
  fingerprint of the prologue (the roles of WebRTC Direct, offerer = dialer);
- a connection whose peer connection closes or fails (the peer closed its end, or ICE consent
  lapsed) is closed here too, so the swarm drops it: py-libp2p's never looks (`_when_ended`);
- its connection's streams are opened and ended without py-libp2p's stalls and leak
  (`webrtc_connection.py`);
- the peer's offer or answer is judged (`_read_sdp`): one no honest peer sends is charged
  to it as a whole frame (`garbled`), a stream that ends or times out is not (SPEC §10.11).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.transport.webrtc._asyncio_bridge import AsyncioBridge
from libp2p.transport.webrtc.certificate import WebRTCCertificate
from libp2p.transport.webrtc.config import WebRTCTransportConfig
from libp2p.transport.webrtc.connection import WebRTCConnection
from libp2p.transport.webrtc.constants import WEBRTC_SIGNALING_PROTOCOL_ID
from libp2p.transport.webrtc.noise_handshake import (
    DataChannelReadWriter,
    perform_noise_handshake,
)
from libp2p.transport.webrtc.signaling import SignalingSession
from libp2p.transport.webrtc.signaling_pb.signaling_pb2 import SignalingMessage

from hearthmesh.node.p2p.circuit_relay import is_relayed
from hearthmesh.node.p2p.hole_punch import PUNCH_WINDOW_S
from hearthmesh.node.p2p.varint_messages import parse_message, read_message_bytes
from hearthmesh.node.p2p.webrtc_connection import StreamRefusal, WebRtcConnection
from hearthmesh.protocol.errors import MalformedMessage, RemoteProtocolError
from hearthmesh.protocol.inbound import InboundLedger

__all__ = [
    "FALLBACK_AFTER_S",
    "MAX_CONNECTIONS",
    "MAX_SIGNALING_BYTES",
    "MAX_UPGRADES",
    "RETRY_AFTER_S",
    "SIGNALING_PROTOCOL",
    "UPGRADE_TIMEOUT_S",
    "WebRtcLayer",
    "is_webrtc",
    "with_predicted_candidates",
]

log = logging.getLogger(__name__)

SIGNALING_PROTOCOL: Final = str(WEBRTC_SIGNALING_PROTOCOL_ID)
FALLBACK_AFTER_S: Final = PUNCH_WINDOW_S + 1.0
"""How long after a relayed connection opens, with no direct one by then, WebRTC is tried:
DCUtR has had its window (SPEC §10.9)."""
UPGRADE_TIMEOUT_S: Final = 15.0
"""Bound on one whole upgrade: signaling, ICE, DTLS and Noise (the default of the node setting
`webrtc_upgrade_timeout_ms`); also the bound on closing a WebRTC connection."""
RETRY_AFTER_S: Final = (10.0, 30.0)
"""A failed upgrade is offered again this long after the previous one ended, while the peer
is still reached through relays alone: a lost burst of packets or a loaded machine past
`UPGRADE_TIMEOUT_S` must not leave the homes relayed for the connection's life (SPEC §10.11)."""
MAX_UPGRADES: Final = 8
"""Upgrades in progress at once, both directions together; past it an offer is refused."""
MAX_CONNECTIONS: Final = 64
"""WebRTC connections held at once (each holds UDP sockets and SCTP state); past it no upgrade
is offered or answered, and the peers stay relayed."""

MAX_SIGNALING_BYTES: Final = 64 * 1024
"""A peer's offer or answer read at most (py-libp2p's own bound on a signaling message)."""

WebRtcReport = Callable[[str, bool], None]
"""Told (on the trio thread) each upgrade's peer and whether it went through."""


def is_webrtc(conn: object) -> bool:
    """True if `conn` (a swarm connection or its muxed connection) runs over WebRTC."""
    muxed = getattr(conn, "muxed_conn", conn)
    return isinstance(muxed, WebRTCConnection)


def with_predicted_candidates(sdp: str, public_ips: list[str]) -> str:
    """`sdp` with a server-reflexive candidate at each public IPv4 address for each IPv4 host
    candidate (same port): where the NAT keeps a source port, that is where the host
    candidate's packets come from as the peer sees them."""
    lines = sdp.splitlines()
    added: list[str] = []
    for line in lines:
        if not line.startswith("a=candidate:"):
            continue
        fields = line[len("a=candidate:") :].split()
        if len(fields) < 8 or fields[2].lower() != "udp" or fields[7] != "host":
            continue
        foundation, component, ip, port = fields[0], fields[1], fields[4], fields[5]
        if not _is_ipv4(ip):
            continue
        for number, public in enumerate(public_ips):
            if public == ip or not _is_ipv4(public):
                continue
            priority = (100 << 24) | (65535 << 8) | (256 - int(component))  # RFC 8445 5.1.2
            added.append(
                f"a=candidate:{foundation}p{number} {component} udp {priority} {public} {port}"
                f" typ srflx raddr {ip} rport {port}"
            )
    if not added:
        return sdp
    out: list[str] = []
    for line in lines:
        if line == "a=end-of-candidates":
            out.extend(added)
            added = []
        out.append(line)
    out.extend(added)
    return "\r\n".join(out) + "\r\n"


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


class WebRtcLayer:
    """Upgrades relayed connections to WebRTC where no direct one came (trio thread only)."""

    def __init__(
        self,
        report: WebRtcReport,
        punch_ended: Callable[[ID], Awaitable[None]],
        refused: StreamRefusal,
        garbled: StreamRefusal,
        stun_servers: Sequence[str] = (),
        retry_after_s: Sequence[float] = RETRY_AFTER_S,
        upgrade_timeout_s: float = UPGRADE_TIMEOUT_S,
    ) -> None:
        self._report = report
        self._refused = refused
        """Told of each stream reset for what its peer sent (over the read budget)."""
        self._garbled = garbled
        """Told of each offer or answer no honest peer sends (a whole frame, SPEC §10.11)."""
        self._punch_ended = punch_ended
        self._stun_servers = list(stun_servers)
        """`stun:HOST:PORT` URLs ICE asks for our server-reflexive candidates (SPEC §10.16)."""
        self._retry_after_s = tuple(retry_after_s)
        """Pauses before each new offer after a failed one (`RETRY_AFTER_S` by default)."""
        self._upgrade_timeout_s = upgrade_timeout_s
        """Bound on one whole upgrade (`UPGRADE_TIMEOUT_S` by default)."""
        self._host: IHost | None = None
        self._config = WebRTCTransportConfig(handshake_timeout=upgrade_timeout_s)
        self._certificate: WebRTCCertificate | None = None
        self._bridge: AsyncioBridge | None = None
        self._bridge_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._upgrading: set[ID] = set()
        self._fallbacks: set[ID] = set()  # peers our fallback upgraded, until a direct one came
        self._read_budget = InboundLedger()
        """Bytes our WebRTC streams hold unread, per peer and in all (its byte limits only)."""

    def build(self, host: IHost) -> None:
        """Answer offers on `host` (served while `running`)."""
        self._host = host
        host.set_stream_handler(TProtocol(SIGNALING_PROTOCOL), self._answer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run our upgrades for the lifetime of the block; the aiortc bridge (a thread with
        its own asyncio loop) starts with the first upgrade and stops at the block's end."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                async with self._bridge_lock:
                    if self._bridge is not None:
                        await self._bridge.stop()
                        self._bridge = None

    async def _started_bridge(self) -> AsyncioBridge:
        async with self._bridge_lock:
            if self._bridge is None:
                bridge = AsyncioBridge()
                await bridge.start()
                self._bridge = bridge
            return self._bridge

    def relayed_connection_opened(self, peer: str) -> None:
        """Try WebRTC to `peer` once DCUtR has had its window, unless a direct connection
        came; the end with the lower peer id offers, so the two ends do not both dial."""
        if self._nursery is not None:
            self._nursery.start_soon(self._fall_back, ID.from_base58(peer))

    async def _fall_back(self, peer: ID) -> None:
        await trio.sleep(FALLBACK_AFTER_S)
        # A loaded machine stretches DCUtR past its window: decide on its outcome, not on the
        # clock, or a punch that went direct late got a WebRTC connection beside it.
        await self._punch_ended(peer)
        for pause in (0.0, *self._retry_after_s):
            await trio.sleep(pause)
            host = self._host
            if host is None or host.get_id().to_base58() > peer.to_base58():
                return
            if self._has_unrelayed(host, peer) or not host.get_network().get_connections(peer):
                return  # direct or WebRTC already, or gone
            if await self.upgrade(peer):
                self._fallbacks.add(peer)
                await self._close_beside_direct(peer)
                return

    def direct_connection_opened(self, peer: str) -> None:
        """A direct connection to `peer` opened: a fallback WebRTC one beside it is redundant."""
        target = ID.from_base58(peer)
        if self._nursery is not None and target in self._fallbacks:
            self._nursery.start_soon(self._close_beside_direct, target)

    async def _close_beside_direct(self, peer: ID) -> None:
        """Close the fallback's WebRTC connections to `peer` if a direct one is there too: a
        punch that went direct late (the other end's, or ours on a loaded machine) may meet a
        fallback already under way, and the two ends then kept both connections."""
        host = self._host
        if host is None:
            return
        connections = list(host.get_network().get_connections(peer))
        if not any(not is_relayed(c) and not is_webrtc(c) for c in connections):
            return
        self._fallbacks.discard(peer)
        for connection in connections:
            if is_webrtc(connection):
                log.info("WebRTC to %s closed: a direct connection came", peer)
                with contextlib.suppress(Exception), trio.move_on_after(UPGRADE_TIMEOUT_S):
                    await connection.close()  # (it may be closing already)

    def _ended(self, conn: WebRTCConnection) -> None:
        """The peer connection under `conn` closed or failed: close `conn` too (trio thread)."""
        if self._nursery is not None:  # else the host is stopping, and closes it
            self._nursery.start_soon(self._close_ended, conn)

    async def _close_ended(self, conn: WebRTCConnection) -> None:
        log.info("WebRTC to %s ended: its peer connection closed or failed", conn.peer_id)
        with contextlib.suppress(Exception), trio.move_on_after(UPGRADE_TIMEOUT_S):
            await conn.close()  # (a no-op where we closed it ourselves)

    @staticmethod
    def _has_unrelayed(host: IHost, peer: ID) -> bool:
        return any(not is_relayed(conn) for conn in host.get_network().get_connections(peer))

    async def upgrade(self, peer: ID) -> bool:
        """Offer WebRTC to `peer` over our connection to it; True if a WebRTC connection to
        it now carries new streams."""
        host = self._host
        if host is None or not self._admit(peer):
            return False
        went = False
        try:
            with trio.move_on_after(self._upgrade_timeout_s):
                stream = await host.new_stream(peer, [TProtocol(SIGNALING_PROTOCOL)])
                try:
                    went = await self._connect(stream, peer, offerer=True)
                finally:
                    await _close_quietly(stream)
        except RemoteProtocolError as exc:  # an answer no honest peer sends: charged
            self._garbled(peer.to_base58(), exc)
            log.info("WebRTC to %s refused: %r", peer, exc)
        except Exception as exc:  # the relayed connection still carries the chat
            log.info("WebRTC to %s failed: %r", peer, exc)
        finally:
            self._upgrading.discard(peer)
        self._report(peer.to_base58(), went)
        log.info("WebRTC to %s: %s", peer, "connected" if went else "failed")
        return went

    async def _answer(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if not self._admit(peer):
            await stream.reset()
            return
        try:
            with trio.move_on_after(self._upgrade_timeout_s):
                await self._connect(stream, peer, offerer=False)
        except RemoteProtocolError as exc:  # an offer no honest peer sends: charged
            self._garbled(peer.to_base58(), exc)
            log.info("WebRTC from %s refused: %r", peer, exc)
        except Exception as exc:
            log.info("WebRTC from %s failed: %r", peer, exc)
        finally:
            self._upgrading.discard(peer)
            await _close_quietly(stream)

    def _admit(self, peer: ID) -> bool:
        """One upgrade per peer, `MAX_UPGRADES` in all, none where WebRTC is up already, and at most
        `MAX_CONNECTIONS` WebRTC connections."""
        host = self._host
        if host is None or self._nursery is None or peer in self._upgrading:
            return False
        if len(self._upgrading) >= MAX_UPGRADES:
            return False
        if any(is_webrtc(conn) for conn in host.get_network().get_connections(peer)):
            return False
        held = sum(is_webrtc(c) for cs in host.get_network().connections.values() for c in cs)
        if held >= MAX_CONNECTIONS:
            return False
        self._upgrading.add(peer)
        return True

    async def _connect(self, stream: INetStream, peer: ID, *, offerer: bool) -> bool:
        host = self._host
        if host is None:
            return False
        if self._certificate is None:  # imports aiortc: not until an upgrade
            self._certificate = WebRTCCertificate.from_aiortc()
        certificate = self._certificate
        bridge = await self._started_bridge()
        from aiortc import RTCSessionDescription
        from libp2p.transport.webrtc._aiortc_helpers import (
            close_peer_connection,
            create_noise_channel,
            create_peer_connection,
            get_remote_fingerprint,
            wait_for_connected,
        )

        rtc_certificate = getattr(certificate, "_rtc_certificate", None)
        if rtc_certificate is None:  # made by `from_aiortc` above
            return False
        session = SignalingSession(stream, timeout=self._upgrade_timeout_s)
        public_ips = _public_ips(host)
        made = create_peer_connection(rtc_certificate, ice_servers=self._stun_servers)
        pc: Any = await bridge.run_coro(made)
        conn: WebRTCConnection | None = None
        try:
            noise_channel = await bridge.run_coro(create_noise_channel(pc))
            noise_send, noise_recv = await bridge.run_coro(_noise_callbacks(noise_channel))
            if offerer:
                await bridge.run_coro(
                    pc.setLocalDescription(await bridge.run_coro(pc.createOffer()))
                )
                await session.send_offer(
                    with_predicted_candidates(pc.localDescription.sdp, public_ips).encode()
                )
                answer = await _read_sdp(stream, SignalingMessage.SDP_ANSWER)
                await bridge.run_coro(
                    pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                )
            else:
                offer = await _read_sdp(stream, SignalingMessage.SDP_OFFER)
                await bridge.run_coro(
                    pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                )
                await bridge.run_coro(
                    pc.setLocalDescription(await bridge.run_coro(pc.createAnswer()))
                )
                await session.send_answer(
                    with_predicted_candidates(pc.localDescription.sdp, public_ips).encode()
                )
            await session.complete()  # every candidate is in the SDP: ICE_DONE both ways
            await bridge.run_coro(wait_for_connected(pc, timeout=self._upgrade_timeout_s))
            remote_fingerprint = get_remote_fingerprint(pc)
            conn = WebRtcConnection(
                peer_id=peer,
                bridge=bridge,
                is_initiator=offerer,
                config=self._config,
                read_budget=self._read_budget,
                refused=self._refused,
            )
            conn.wire(pc)

            async def send(data: bytes) -> None:
                await bridge.run_coro(noise_send(data))

            async def recv() -> bytes:
                data: bytes = await bridge.run_coro(noise_recv())
                return data

            ours, theirs = certificate.fingerprint, remote_fingerprint
            authenticated = await perform_noise_handshake(
                conn=DataChannelReadWriter(send_cb=send, recv_cb=recv, is_initiator=not offerer),
                local_peer=host.get_id(),
                libp2p_privkey=host.get_private_key(),
                noise_static_key=create_x25519_key_pair().private_key,
                dialer_fingerprint=ours if offerer else theirs,
                server_fingerprint=theirs if offerer else ours,
                is_initiator=not offerer,
                remote_peer=None if offerer else peer,
            )
            if authenticated != peer:  # the Noise key must be the relayed peer's
                raise ConnectionError(f"WebRTC peer is {authenticated}, not {peer}")
            network = host.get_network()
            if not isinstance(network, Swarm):
                raise ConnectionError("the host's network is not a swarm")
            await conn.start()
            await network.add_conn(conn, direction="outbound" if offerer else "inbound")
            token = trio.lowlevel.current_trio_token()
            await bridge.run_coro(_when_ended(pc, lambda: _call_soon(token, self._ended, conn)))
            return True
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    if conn is not None:
                        await conn.close()
                    else:
                        await bridge.run_coro(close_peer_connection(pc))
                except Exception:
                    log.debug("closing a failed WebRTC connection failed", exc_info=True)
            raise


async def _read_sdp(stream: INetStream, expected: int) -> str:
    """The peer's offer or answer (`expected`: its signaling message type), judged as
    py-libp2p's `SignalingSession` does not: it let bytes that are no signaling message out
    as a protobuf error and a non-UTF-8 SDP as a decoding error, and aiortc takes an SDP
    without a single media section (SPEC §10.11).

    Raises:
        TooLarge: a length over `MAX_SIGNALING_BYTES`.
        MalformedMessage: a length or bytes that are no signaling message, a message of
            another type, or an SDP that is not UTF-8 or has no data channel section (both
            ends open the Noise channel before the offer, so an honest SDP always has one).
    """
    data = await read_message_bytes(stream, MAX_SIGNALING_BYTES, "a signaling message")
    message = parse_message(data, SignalingMessage(), "a signaling message")
    if message.type != expected:
        raise MalformedMessage(f"a signaling message of type {message.type}, not {expected}")
    try:
        sdp = message.data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("an SDP that is not UTF-8") from None
    if not any(line.startswith("m=application ") for line in sdp.splitlines()):
        raise MalformedMessage("an SDP without a data channel section")
    return sdp


async def _when_ended(pc: Any, ended: Callable[[], None]) -> None:
    """Call `ended` once `pc` is closed or failed (at once if it is already), on the bridge's
    loop, where aiortc fires its events.

    py-libp2p's `WebRTCConnection` never watches its peer connection once connected, so one
    the peer closed (its DTLS close_notify makes aiortc close ours) or whose path died (ICE
    consent lapsed) stayed open and listed here: streams opened on it went nowhere, and our
    path to the peer read "webrtc" for good, e.g. beside the direct connection of a punch that
    succeeded late, after the other end closed its WebRTC one (`_close_beside_direct`)."""
    fired = False

    def check() -> None:
        nonlocal fired
        if not fired and pc.connectionState in ("closed", "failed"):
            fired = True
            ended()

    pc.on("connectionstatechange", check)
    check()


def _call_soon(token: trio.lowlevel.TrioToken, fn: Callable[..., None], *args: Any) -> None:
    """Schedule `fn(*args)` on the trio thread of `token` from another thread, unless that
    thread's run has ended (the host stopped)."""
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn, *args)


async def _noise_callbacks(channel: Any) -> tuple[Any, Any]:
    """Bind data channel 0's events on the bridge's loop, where aiortc fires them."""
    from libp2p.transport.webrtc._aiortc_helpers import make_noise_channel_callbacks

    send, recv, _ = make_noise_channel_callbacks(channel)
    return send, recv


def _public_ips(host: IHost) -> list[str]:
    """Our IPv4 addresses as peers observed them (our NAT's public side), never a relay's."""
    manager = getattr(host, "_observed_addr_manager", None)
    if manager is None:
        return []
    ips: list[str] = []
    for addr in manager.addrs(min_observers=1):
        text = str(addr)
        if "/p2p-circuit" in text or not text.startswith("/ip4/"):
            continue
        ip = text.split("/")[2]
        if ip not in ips:
            ips.append(ip)
    return ips


async def _close_quietly(stream: INetStream) -> None:
    try:
        await stream.close()
    except Exception:
        log.debug("closing a signaling stream failed", exc_info=True)
