"""Length-prefixed framing for libp2p streams: a u32 big-endian length, then that many bytes.

Sans-I/O: `FrameDecoder` is fed whatever chunks the stream returns and yields whole frames, so a
reader asks the stream for large chunks instead of the one-byte reads of libp2p's
`read_varint_prefixed_bytes` (libp2p-notes "Hosts and streams"). The declared length is checked
against the limit before any payload is buffered, so a hostile length cannot make us allocate.

State: a `FrameDecoder` owns the bytes of a frame not yet whole; one per stream, used by that
stream's one reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from hearthmesh.protocol.errors import LocalProtocolError, TooLarge

__all__ = [
    "FRAME_HEADER_BYTES",
    "MAX_FRAME_BYTES",
    "FrameDecoder",
    "encode_frame",
    "encode_frames",
]

MAX_FRAME_BYTES: Final = 1 << 20
"""Default largest payload of one frame (1 MiB); configurable per stream."""

_HEADER: Final = struct.Struct(">I")
FRAME_HEADER_BYTES: Final = _HEADER.size
_COMPACT_AT_BYTES: Final = 64 * 1024  # drop consumed bytes once this many pile up


def encode_frame(payload: bytes, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame: u32 big-endian length, then `payload`.

    Raises:
        LocalProtocolError: `payload` is longer than `max_frame_bytes` (our caller's bug).
    """
    if len(payload) > max_frame_bytes:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds {max_frame_bytes}")
    return _HEADER.pack(len(payload)) + payload


def encode_frames(payloads: Iterable[bytes], *, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Several frames in one buffer, so they cost one stream write."""
    return b"".join(encode_frame(p, max_frame_bytes=max_frame_bytes) for p in payloads)


class FrameDecoder:
    """Reassembles frames from arbitrary chunks; keeps the remainder for the next frame."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame at EOF is an error)."""
        return len(self._buf) - self._pos

    @property
    def pending_frame_bytes(self) -> int:
        """Header and declared length of the frame begun but not complete; 0 before its
        header is in (a partial header is at most 3 bytes)."""
        if len(self._buf) - self._pos < FRAME_HEADER_BYTES:
            return 0
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        return FRAME_HEADER_BYTES + int(length)

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        if self._pos >= _COMPACT_AT_BYTES and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next whole frame, or None until more bytes are fed.

        Raises:
            TooLarge: the next frame declares a length above `max_frame_bytes`; the decoder
                cannot resynchronise after this, so the stream must be dropped.
        """
        if len(self._buf) - self._pos < FRAME_HEADER_BYTES:
            return None
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        if length > self.max_frame_bytes:
            raise TooLarge(f"frame of {length} bytes exceeds {self.max_frame_bytes}")
        start = self._pos + FRAME_HEADER_BYTES
        end = start + length
        if end > len(self._buf):
            return None
        frame = bytes(self._buf[start:end])
        self._pos = end
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return frame
