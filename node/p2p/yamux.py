"""Yamux receive credit returned in half-window steps, as go-yamux does (SPEC §10.1).

py-libp2p 0.8.1's yamux stream sends a WINDOW_UPDATE frame on almost every read of a small
frame (its `RELEASE_ON_READ` and "partial slack" rules), and it sends it *before* the read
returns. For our request/ack streams that is one more encrypted frame per message each way, on
the critical path of every delivery: the receiver writes an update before it can look at the
batch, and the sender's libp2p thread wakes to process it. Measured with two plain trio hosts
in two processes, 1 ms apart: round trip p50 0.87 to 0.90 ms with the per-read updates, 0.78
to 0.81 ms without.

`release_credit_in_half_windows` makes one stream keep the standard rule instead: consumed
bytes are credited back to the peer once they reach half the target window (128 KiB at first),
so the sender never stalls (it may still have half a window in flight) and a small frame
costs no update at all; py-libp2p's window auto-tuning still grows the window of a bulk flow.
In-process `bench p2p`: round trip p50 from 1.62 to 1.72 ms down to 1.10 to 1.25 ms, frames/s
up 10 to 40 %. The host gives the rule to every stream its swarm adds, libp2p's own (kad-dht,
gossipsub, identify) included: a DHT walk for a user known nowhere cost 20-30 % less CPU.
"""

from __future__ import annotations

import types
from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

__all__ = ["release_credit_in_half_windows"]


async def _credit_half_windows(self: YamuxStream, *, bytes_read: int = 0) -> None:
    async with self.window_lock:
        self._pending_recv_release += bytes_read
        credit = self._pending_recv_release
        if credit < self.target_recv_window // 2:
            return
        self._pending_recv_release = 0
        self.recv_window += credit
        # py-libp2p's own auto-tuning: updates that come fast (a bulk flow) double the window.
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        credit += self._apply_autotune_epoch(buffered)
    # Not under window_lock: an inbound WINDOW_UPDATE needs it while we write (py-libp2p).
    await self.send_window_update(credit)


def release_credit_in_half_windows(muxed_stream: Any) -> None:
    """Install the half-window credit rule on `muxed_stream` if it is a yamux stream."""
    if isinstance(muxed_stream, YamuxStream):
        # The read paths call this hook by name after every read (py-libp2p 0.8.1).
        setattr(  # noqa: B010 - an instance attribute shadows the method for this stream only
            muxed_stream,
            "_auto_tune_and_send_window_update",
            types.MethodType(_credit_half_windows, muxed_stream),
        )
