"""The WebRTC connection `WebRtcLayer` hands to the swarm (SPEC §10.11): py-libp2p 0.8.1's
`WebRTCConnection`, each libp2p stream a data channel, with two of its stream bugs fixed.

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`). State
owned: none beyond py-libp2p's own (its registry of streams by channel id, which routes each
data channel's messages to its stream). What differs from py-libp2p's:
- an outbound stream is in the registry before its data channel is created. py-libp2p adds it
  after: the channel's open reaches the peer, whose multistream-select answers at once
  (`/multistream/1.0.0`), and an answer back before the trio thread resumed was dropped ("for
  an unknown channel") and the negotiation waited out its timeout. Two hosts on this machine
  stalled so once in 2-70 streams; a deliver stream that stalled so timed out, and the sender
  closed its connections to the peer, the WebRTC one with the rest;
- a stream leaves the registry once closed or reset. py-libp2p never removes one (its
  `remove_stream` is what the swarm replaces with a hook of its own), and refuses a new stream
  past 256 in the registry: a connection carried 256 streams in all, then none.
Its data channels are still not closed at the stream's end (py-libp2p keeps them where we
cannot reach them): the peer's SCTP association holds them until the connection closes.
"""

from __future__ import annotations

import trio
from libp2p.abc import IMuxedStream
from libp2p.transport.webrtc.connection import WebRTCConnection
from libp2p.transport.webrtc.exceptions import WebRTCStreamError
from libp2p.transport.webrtc.stream import WebRTCStream

__all__ = ["WebRtcConnection"]


class _Stream(WebRTCStream):
    """A data channel's stream that leaves its connection's registry when it ends."""

    def _cleanup(self) -> None:  # py-libp2p calls it at the end of close() and reset()
        super()._cleanup()
        connection = self.muxed_conn
        if isinstance(connection, WebRtcConnection):
            connection.forget(self._channel_id)


class WebRtcConnection(WebRTCConnection):
    """py-libp2p's connection, its streams registered before their channel opens and removed
    when they end."""

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
                stream._cleanup()  # the connection is closing: nobody will accept it

        self._run_on_trio_thread(enqueue)
        return stream

    def forget(self, channel_id: int) -> None:
        """Take an ended stream out of the registry. (py-libp2p's `remove_stream` would, but the
        swarm replaces it on the connection with a hook of its own, for its streams.)"""
        with self._streams_lock:
            self._streams.pop(channel_id, None)

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
