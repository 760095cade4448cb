"""The WebRTC connection `WebRtcLayer` hands to the swarm (SPEC §10.11): py-libp2p 0.8.1's
`WebRTCConnection`, each libp2p stream a data channel, with three of its stream bugs fixed.

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`). State
owned: each stream's count of bytes buffered for its reader, besides py-libp2p's own (its
registry of streams by channel id, which routes each data channel's messages to its stream);
the budget those bytes count in is `WebRtcLayer`'s. What differs from py-libp2p's:
- an outbound stream is in the registry before its data channel is created. py-libp2p adds it
  after: the channel's open reaches the peer, whose multistream-select answers at once
  (`/multistream/1.0.0`), and an answer back before the trio thread resumed was dropped ("for
  an unknown channel") and the negotiation waited out its timeout. Two hosts on this machine
  stalled so once in 2-70 streams, and a deliver stream that stalls so fails its batch after
  the 5 s bound (SPEC §11.5.2);
- a stream leaves the registry once closed or reset. py-libp2p never removes one (its
  `remove_stream` is what the swarm replaces with a hook of its own), and refuses a new stream
  past 256 in the registry: a connection carried 256 streams in all, then none;
- a stream buffers `READ_AHEAD_MESSAGES` (128) messages its reader has not taken, within its
  peer's share of a byte budget (§10.4's numbers: 4 MiB per peer, 32 MiB in all), and is reset
  past either, and the peer is charged for it (but for the whole budget's excess, `Busy`).
  py-libp2p buffers 64 and drops the next ones with a warning: a reader 2 s behind a peer
  that wrote 100 small frames lost 36 of them, and the frame decoder read on from the gap (a
  largest frame, 1 MiB, is 65 messages by itself).
- a stream's data channel is closed once the stream ended here (closed: our FIN sent and our
  read side done; or reset): an SCTP stream reset, which aiortc sends after what is queued on
  the channel, so both ends free the stream id. py-libp2p kept every channel (in a map of its
  own, which it never pruned) and never closed one: aiortc gives a new channel the lowest id
  not in use, so ids only grew, and a long-lived connection ran out of its 65,535 after
  32,767 streams of one side. So this connection wires the peer connection's channels itself
  (`wire`, in place of py-libp2p's `wire_pc_to_connection`), keeping them by stream while
  their channel is open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import trio
from libp2p.abc import IMuxedStream
from libp2p.transport.webrtc.connection import WebRTCConnection
from libp2p.transport.webrtc.exceptions import WebRTCStreamError
from libp2p.transport.webrtc.stream import StreamState, WebRTCStream

from hearthmesh.protocol.errors import RemoteProtocolError, TooLarge
from hearthmesh.protocol.inbound import InboundLedger

__all__ = ["READ_AHEAD_MESSAGES", "StreamRefusal", "WebRtcConnection"]

log = logging.getLogger(__name__)


StreamRefusal = Callable[[str, RemoteProtocolError], None]
"""(peer, why): a stream of that peer was reset for what it sent (called on the trio thread)."""

READ_AHEAD_MESSAGES: Final = 128
"""Data channel messages a stream holds that its reader has not taken yet (each at most 16 KiB
of payload: 2 MiB, a whole frame of the largest size twice, SPEC §10.2). A data channel has no
flow control towards the sender, so a reader that lags (a store commit, a loaded machine)
must find the messages buffered; py-libp2p holds 64 and drops the rest. The bytes count in
the connection's `read_budget` too (4 MiB per peer, 32 MiB in all by default)."""


class _BoundedSend:
    """The sending side of a stream's read buffer, fed by the data channel: a message past
    the stream's room or its connection's byte budget resets the stream (the reader gets an
    error, the peer a RESET) instead of py-libp2p's silent drop, which left a gap in the byte
    stream that the frame decoder then read as garbage (SPEC §10.11)."""

    def __init__(self, send: trio.MemorySendChannel[bytes], stream: _Stream) -> None:
        self._send = send
        self._stream = stream

    def send_nowait(self, payload: bytes) -> None:
        stream = self._stream
        try:
            stream.take(len(payload))
        except RemoteProtocolError as exc:
            log.info("WebRTC stream %d: over the read budget (%s): reset", stream.channel_id, exc)
            stream.overflowed(exc)
        else:
            try:
                self._send.send_nowait(payload)
                return
            except trio.WouldBlock:
                stream.give_back(len(payload))
                log.info(
                    "WebRTC stream %d: its reader is %d messages behind: reset",
                    stream.channel_id,
                    READ_AHEAD_MESSAGES,
                )
                stream.overflowed(TooLarge(f"more than {READ_AHEAD_MESSAGES} messages unread"))
        raise trio.ClosedResourceError  # py-libp2p passes over it

    def close(self) -> None:
        self._send.close()


class _CountedReceive:
    """The reading side of a stream's read buffer: what the reader takes leaves the budget."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes], stream: _Stream) -> None:
        self._receive = receive
        self._stream = stream

    async def receive(self) -> bytes:
        chunk = await self._receive.receive()
        self._stream.give_back(len(chunk))
        return chunk

    def receive_nowait(self) -> bytes:
        chunk = self._receive.receive_nowait()
        self._stream.give_back(len(chunk))
        return chunk

    def close(self) -> None:
        self._receive.close()


class _Stream(WebRTCStream):
    """A data channel's stream that buffers what its reader has not taken (up to
    `READ_AHEAD_MESSAGES` and its connection's share of the read budget, then a reset, never
    a gap) and leaves its connection's registry when it ends."""

    def __init__(
        self,
        connection: WebRtcConnection,
        channel_id: int,
        is_initiator: bool,
        trio_token: trio.lowlevel.TrioToken | None,
    ) -> None:
        super().__init__(connection, channel_id, is_initiator, trio_token)
        self._connection = connection
        self._unread = 0
        send, receive = trio.open_memory_channel[bytes](READ_AHEAD_MESSAGES)
        self._read_send = _BoundedSend(send, self)  # type: ignore[assignment]
        self._read_recv = _CountedReceive(receive, self)  # type: ignore[assignment]

    def take(self, size: int) -> None:
        """Reserve `size` bytes arriving for the reader.

        Raises:
            TooLarge: past the peer's share of the budget; Busy: past the whole budget.
        """
        self._connection.read_budget.take(self._connection.budget_key, size)
        self._unread += size

    def overflowed(self, error: RemoteProtocolError) -> None:
        """The peer sent more than the stream may hold unread: reset it, and charge the peer
        (nothing for `Busy`, the whole budget's excess: SPEC §10.4, §10.11). Once: the reset
        itself queues the reader's end-of-stream mark, which a full buffer refuses too."""
        if self._state is StreamState.RESET:
            return
        self._reset_on_trio_thread()
        self._connection.refused(self._connection.budget_key, error)

    def give_back(self, size: int) -> None:
        self._unread -= size
        self._connection.read_budget.release(self._connection.budget_key, size)

    def _cleanup(self) -> None:  # py-libp2p calls it at the end of close() and reset()
        super()._cleanup()
        self.give_back(self._unread)  # what nobody will read now
        self._connection.forget(self._channel_id)


class WebRtcConnection(WebRTCConnection):
    """py-libp2p's connection, its streams registered before their channel opens and removed
    when they end, what they buffer for their readers counted in `read_budget`."""

    def __init__(
        self, *, read_budget: InboundLedger, refused: StreamRefusal, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.read_budget = read_budget
        """Bytes the streams hold for their readers, per peer and over all connections."""
        self.budget_key = str(self.peer_id)
        self.refused = refused
        """Told (trio thread) of each stream reset for what its peer sent, to charge it."""
        self._channels: dict[int, Any] = {}
        """aiortc's data channel of each stream, while open (the aiortc loop's only)."""

    async def open_stream(self) -> IMuxedStream:
        if self._closed:
            raise WebRTCStreamError("Connection is closed")
        channel_id = self._allocate_outbound_id()
        stream = self._register(channel_id, outbound=True)  # the peer may answer at once
        try:
            await self._bridge.run_coro(self._create_channel_cb(channel_id, ""))
        except Exception as exc:
            self.forget(channel_id)
            raise WebRTCStreamError(f"data channel {channel_id} not created: {exc}") from exc
        return stream

    def on_datachannel(self, channel_id: int) -> WebRTCStream:
        """The peer opened a data channel (the bridge's asyncio thread): its stream, queued
        for `accept_stream` as py-libp2p's."""
        stream = self._register(channel_id, outbound=False)

        def enqueue() -> None:
            try:
                self._accept_send.send_nowait(stream)
            except (trio.WouldBlock, trio.ClosedResourceError):
                # Past the accept backlog, or the connection is closing: nobody will accept
                # it, so the peer is told (py-libp2p left it registered and unanswered).
                log.info("WebRTC: inbound stream %d not accepted: reset", channel_id)
                stream._reset_on_trio_thread()

        self._run_on_trio_thread(enqueue)
        return stream

    def forget(self, channel_id: int) -> None:
        """Take an ended stream out of the registry and close its data channel. (py-libp2p's
        `remove_stream` would do the first, but the swarm replaces it on the connection with a
        hook of its own, for its streams.)"""
        with self._streams_lock:
            self._streams.pop(channel_id, None)
        self._bridge.schedule_fire_and_forget(self._close_channel(channel_id))

    async def _close_channel(self, channel_id: int) -> None:
        """On the aiortc loop: close the channel (once; a channel the peer closed is gone)."""
        channel = self._channels.pop(channel_id, None)
        if channel is not None:
            channel.close()

    def wire(self, pc: Any) -> None:
        """Route `pc`'s data channels to their streams (py-libp2p's `wire_pc_to_connection`,
        with the channels kept here while they are open: `forget` closes them)."""
        from libp2p.transport.webrtc._aiortc_helpers import (
            _wait_channel_open,
            close_peer_connection,
            set_private_attr,
        )

        channels = self._channels  # touched on the aiortc loop only

        def bind(channel: Any, channel_id: int) -> None:
            @channel.on("message")  # type: ignore[untyped-decorator]
            def _on_message(message: str | bytes) -> None:
                data = message if isinstance(message, bytes) else message.encode()
                self.on_channel_message(channel_id, data)

            @channel.on("close")  # type: ignore[untyped-decorator]
            def _on_close() -> None:
                channels.pop(channel_id, None)
                self.on_channel_closed(channel_id)

        async def create(channel_id: int, label: str) -> None:
            # The SCTP stream ids' parity follows the DTLS role (RFC 8832), not aiortc's ICE
            # role: py-libp2p's fix, kept.
            sctp = pc.sctp
            role = getattr(getattr(sctp, "transport", None), "_role", "auto")
            if role in ("client", "server"):
                set_private_attr(sctp, "_data_channel_id", 0 if role == "client" else 1)
            channel = pc.createDataChannel(label or f"stream-{channel_id}")
            channels[channel_id] = channel
            bind(channel, channel_id)

        async def send(channel_id: int, data: bytes) -> None:
            channel = channels.get(channel_id)
            if channel is None:
                return
            if channel.readyState != "open":
                await _wait_channel_open(channel)
            channel.send(data)

        async def close_pc() -> None:
            await close_peer_connection(pc)

        @pc.on("datachannel")  # type: ignore[untyped-decorator]
        def _on_datachannel(channel: Any) -> None:
            try:
                channel_id = self._allocate_inbound_id()
            except WebRTCStreamError as exc:  # past the streams a connection holds
                log.info("WebRTC: inbound data channel refused (%s): closed", exc)
                channel.close()
                return
            channels[channel_id] = channel
            bind(channel, channel_id)  # before the stream exists: an early message is routed
            self.on_datachannel(channel_id)

        self._create_channel_cb = create
        self._send_on_channel_cb = send
        self._close_pc_cb = close_pc

    def _register(self, channel_id: int, *, outbound: bool) -> _Stream:
        stream = _Stream(
            connection=self,
            channel_id=channel_id,
            is_initiator=outbound,
            trio_token=self._trio_token,
        )
        stream._send_callback = self._make_send_callback(channel_id)
        with self._streams_lock:
            self._streams[channel_id] = stream
        return stream
