"""Bounds on what peers' inbound streams may hold (SPEC §10.4): counts, bytes, timeouts.

Pure bookkeeping: the host asks `InboundLedger.open` for each inbound stream and tells it when
the stream ends; each stream asks `reserve` before it reads the rest of a frame that did not
arrive whole, and gives the bytes back with `release` once the frame is read or the stream
ends. So however many streams peers open and however long they hold a frame open, the bytes
buffered for partially read frames stay under `max_buffered_bytes`, and each peer holds at
most `max_streams_per_peer` streams. The timeouts are applied by the reader (node/).

State: the instance's: streams per peer and the bytes reserved for partial frames; its owner
(the host) calls it from one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Busy, TooLarge, TooManyStreams

__all__ = ["InboundLedger", "InboundPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundPolicy:
    """The limits of SPEC §10.4 on inbound streams; the defaults are the SPEC's."""

    max_streams_per_peer: int = 16
    """Inbound streams one peer may hold open at once (default 16); past it a new one is reset
    and the peer is charged (it is its own excess)."""
    max_streams: int = 128
    """Inbound streams of all peers together (default 128); past it a new one is reset,
    charging no one."""
    max_buffered_bytes: int = 32 << 20
    """Bytes of frames that did not arrive whole, over all inbound streams (default 32 MiB);
    a frame that would exceed it resets its stream, charging no one."""
    max_buffered_bytes_per_peer: int = 4 << 20
    """The same, for the streams of one peer (default 4 MiB): one peer cannot take the whole
    budget from the others."""
    frame_timeout_ms: int = 30_000
    """A frame begun must be complete within this time (default 30 s), else the stream is
    reset and the peer charged (`FRAME_TIMEOUT`)."""
    idle_timeout_ms: int = 120_000
    """An inbound stream with no frame begun for this long is reset (default 120 s); a
    quiet stream costs the peer nothing."""
    max_libp2p_streams_per_peer: int = 64
    """Inbound streams of one peer in all protocols, libp2p's own included (ping, identify,
    gossipsub, kad), before negotiation (default 64); past it a new one is reset unread."""
    max_libp2p_streams: int = 4_096
    """Inbound and outbound streams of all peers together in all protocols (default 4,096)."""
    connection_burst: int = 16
    """New inbound connections one peer may open at once (default 16), loopback included; past
    them and `connections_per_min`, a new one is closed before we greet it and the peer is
    charged (SPEC §11.6.6): each one costs identify, our hello and a pubsub hello."""
    connections_per_min: float = 12
    """How fast a peer's connection budget refills (default 12 a minute)."""


class InboundLedger:
    """Counts inbound streams per peer and bytes reserved for partial frames."""

    def __init__(self, policy: InboundPolicy | None = None) -> None:
        self.policy = policy or InboundPolicy()
        self._streams: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._total = 0
        self.buffered_bytes = 0
        """Bytes reserved for partially read frames now."""
        self.peak_buffered_bytes = 0
        """The most `buffered_bytes` ever was (status and tests)."""

    @property
    def streams(self) -> int:
        """Inbound streams open now, over all peers."""
        return self._total

    def streams_of(self, peer: str) -> int:
        """Inbound streams `peer` holds open now."""
        return self._streams.get(peer, 0)

    def open(self, peer: str) -> None:
        """Count a new inbound stream of `peer`.

        Raises:
            TooManyStreams: `peer` holds `max_streams_per_peer` already (its own excess).
            Busy: all peers together hold `max_streams` (no one's fault in particular).
        """
        held = self._streams.get(peer, 0)
        if held >= self.policy.max_streams_per_peer:
            raise TooManyStreams(f"{held} inbound streams open already")
        if self._total >= self.policy.max_streams:
            raise Busy(f"{self._total} inbound streams open over all peers")
        self._streams[peer] = held + 1
        self._total += 1

    def close(self, peer: str) -> None:
        """One inbound stream of `peer` ended (after a successful `open`)."""
        held = self._streams.get(peer, 0)
        if held <= 1:
            self._streams.pop(peer, None)
        else:
            self._streams[peer] = held - 1
        if held:
            self._total -= 1

    def buffered_bytes_of(self, peer: str) -> int:
        """Bytes reserved for the partial frames of `peer` now."""
        return self._bytes.get(peer, 0)

    def reserve(self, peer: str, size: int) -> bool:
        """Room for `size` more bytes of a partial frame of `peer`; False (nothing reserved)
        if its share or the whole budget has none."""
        try:
            self.take(peer, size)
        except (TooLarge, Busy):
            return False
        return True

    def take(self, peer: str, size: int) -> None:
        """`reserve`, saying why not, for bytes a peer sent that we hold unread for its sake
        (WebRTC streams, SPEC §10.11).

        Raises:
            TooLarge: past `peer`'s own share (its excess).
            Busy: past the whole budget (no one's fault in particular).
        """
        held = self._bytes.get(peer, 0)
        if held + size > self.policy.max_buffered_bytes_per_peer:
            raise TooLarge(f"{held} bytes held unread already")
        if self.buffered_bytes + size > self.policy.max_buffered_bytes:
            raise Busy(f"{self.buffered_bytes} bytes held unread over all peers")
        self._bytes[peer] = held + size
        self.buffered_bytes += size
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)

    def release(self, peer: str, size: int) -> None:
        """Give back bytes from `reserve`."""
        held = self._bytes.get(peer, 0) - size
        if held > 0:
            self._bytes[peer] = held
        else:
            self._bytes.pop(peer, None)
        self.buffered_bytes = max(0, self.buffered_bytes - size)
