"""Errors of the libp2p bridge: every one derives from `HearthError` (CONVENTIONS §1.7).

libp2p and trio exceptions never leave the bridge; they are chained (`raise ... from exc`) to one
of these so callers in `node/` catch a single family.
"""

from __future__ import annotations

from hearthmesh.protocol.errors import HearthError

__all__ = [
    "DialFailed",
    "HostClosed",
    "P2PError",
    "PeerUnreachable",
    "ProtocolNotSpoken",
    "StreamClosed",
    "StreamCutOff",
    "StreamIdle",
    "StreamOpenFailed",
    "StreamRefused",
    "describe_error",
]


class P2PError(HearthError):
    """Something in the libp2p layer failed; the message says what and the cause is chained."""


class HostClosed(P2PError):
    """The host is stopped (or stopping), or its trio thread is gone."""


class DialFailed(P2PError):
    """A connection to a peer could not be made (refused, bad address, handshake failed)."""


class StreamOpenFailed(P2PError):
    """A stream could not be opened: no connection, or the peer does not speak the protocol."""


class PeerUnreachable(StreamOpenFailed):
    """No connection to the peer could be made or kept for the stream: the dial failed, or the
    connection closed under the open. The path is lost; the peer may be fine."""


class StreamRefused(StreamOpenFailed):
    """The peer is connected and did not give the stream: it said no to the protocol
    (`ProtocolNotSpoken`), or reset the stream or let its negotiation time out while the
    connection stayed up (its stream slots were full, it is loaded). Trying again at once
    meets the same peer in the same state, unlike a lost path."""


class ProtocolNotSpoken(StreamRefused):
    """The peer answered that it speaks none of the protocols asked for (multistream `na`).
    Any other refusal (a negotiation that timed out on a loaded peer, a stream reset past its
    slots) says nothing of what the peer speaks."""


class StreamClosed(P2PError):
    """The stream ended: clean EOF at a frame boundary, a reset by the peer, or a local close."""


class StreamCutOff(StreamClosed):
    """The stream ended inside a frame: the peer went away mid-write (a crash, a dropped link).
    Like any other end of a stream, it costs the peer no standing (SPEC §10.2)."""


class StreamIdle(StreamClosed):
    """We reset an inbound stream on which no frame began within the idle timeout (SPEC
    §10.4). Quiet is no breach: it costs the peer no standing."""


def describe_error(error: BaseException | None) -> str:
    """`StreamReset <- MuxedStreamReset: Stream was reset`: the error and its causes (up to 6:
    a failed stream open is libp2p's error, multistream's, the stream's and the muxer's)."""
    names: list[str] = []
    while error is not None and len(names) < 6:
        text = str(error)
        names.append(type(error).__name__ + (f": {text}" if text else ""))
        error = error.__cause__ or error.__context__
    return " <- ".join(names) or "no exception"
