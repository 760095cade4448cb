"""Media transfer `/hearthmesh/media/0` (SPEC §25): frames, and the checks a fetcher makes.

A message carries a media reference (digest, declared size; protocol/content.py); the blob
itself is fetched from a home node of the sender over this stream: one REQUEST, answered by
CHUNK frames in offset order and an END frame, or by one ERROR frame. `MediaDownload` is the
fetcher's side as a sans-I/O machine: it takes the answer frames and returns the blob only
once its bytes are contiguous, within the declared size and hash to the digest.

State: a `MediaDownload` owns the chunks of one blob received so far; one per fetch, used by
the fetching task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .delivery import ProtocolErrorFrame
from .errors import HearthError, MalformedMessage, TooLarge
from .media_seal import sealed_size

__all__ = [
    "MAX_BLOB_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_MEDIA_BYTES",
    "MAX_REQUEST_BYTES",
    "MEDIA_PROTOCOL",
    "DigestMismatch",
    "MediaChunk",
    "MediaDownload",
    "MediaEnd",
    "MediaFrameType",
    "MediaRefused",
    "answer_frames",
    "decode_answer",
    "decode_request",
    "encode_media_error",
    "encode_request",
]

MEDIA_PROTOCOL: Final = "/hearthmesh/media/0"
MAX_MEDIA_BYTES: Final = 16 * 1024 * 1024
"""Largest plaintext uploaded: the client API's upload limit (SPEC §15.2.3)."""
MAX_BLOB_BYTES: Final = sealed_size(MAX_MEDIA_BYTES)
"""Largest blob served or fetched: the upload limit sealed (SPEC §28.1)."""
MAX_CHUNK_BYTES: Final = 256 * 1024
MAX_REQUEST_BYTES: Final = 64
"""A REQUEST is 37 bytes; anything longer is refused before parsing."""
_MAX_ANSWER_BYTES: Final = MAX_CHUNK_BYTES + 32
_MAX_ERROR_TEXT: Final = 256
_DIGEST_BYTES: Final = 32


class MediaFrameType(IntEnum):
    """First element of every frame on a media stream (SPEC §25.2)."""

    REQUEST = 1
    CHUNK = 2
    END = 3
    ERROR = 4


class DigestMismatch(MalformedMessage):
    """The bytes served do not hash to the digest asked for: the server lied."""


class MediaRefused(HearthError):
    """The server answered ERROR: it does not serve this blob to us (no breach of the spec)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"refused with code {code}: {message}")
        self.refusal_code = code
        """The §9 code of the ERROR frame (NOT_FOUND, NOT_AUTHORIZED, TOO_LARGE, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaChunk:
    """Bytes of the blob starting at `offset`."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaEnd:
    """The blob is complete: `total` bytes were sent."""

    total: int


# --- encoding -----------------------------------------------------------------------------------


def encode_request(digest: bytes) -> bytes:
    """[1, digest]."""
    return encode_canonical([int(MediaFrameType.REQUEST), digest])


def answer_frames(data: bytes) -> list[bytes]:
    """The whole answer for a blob: [2, offset, bytes] per MAX_CHUNK_BYTES, then [3, total]."""
    frames = [
        encode_canonical(
            [int(MediaFrameType.CHUNK), offset, data[offset : offset + MAX_CHUNK_BYTES]]
        )
        for offset in range(0, len(data), MAX_CHUNK_BYTES)
    ]
    frames.append(encode_canonical([int(MediaFrameType.END), len(data)]))
    return frames


def encode_media_error(error: HearthError) -> bytes:
    """[4, code, message]: the refusal of a request; the server closes the stream after it."""
    text = str(error)[:_MAX_ERROR_TEXT].encode("ascii", "replace").decode("ascii")
    return encode_canonical([int(MediaFrameType.ERROR), int(error.code), text])


# --- decoding -----------------------------------------------------------------------------------


def decode_request(data: bytes) -> bytes:
    """The digest a REQUEST asks for.

    Raises:
        TooLarge: over MAX_REQUEST_BYTES (checked before parsing).
        MalformedMessage: not [1, 32-byte digest].
    """
    match decode_canonical(data, max_bytes=MAX_REQUEST_BYTES):
        case [int() as kind, bytes() as digest] if (
            kind == MediaFrameType.REQUEST and len(digest) == _DIGEST_BYTES
        ):
            return digest
    raise MalformedMessage("a media request is [1, 32-byte digest]")


def decode_answer(data: bytes) -> MediaChunk | MediaEnd | ProtocolErrorFrame:
    """Parse one frame a server sends (structure only; `MediaDownload` checks the sequence).

    Raises:
        TooLarge: over a chunk's size plus framing (checked before parsing).
        MalformedMessage: anything else that is not CHUNK, END or ERROR.
    """
    value: CborValue = decode_canonical(data, max_bytes=_MAX_ANSWER_BYTES)
    match value:
        case [2, int() as offset, bytes() as chunk] if offset >= 0:
            if len(chunk) > MAX_CHUNK_BYTES:
                raise TooLarge(f"a chunk holds at most {MAX_CHUNK_BYTES} bytes")
            return MediaChunk(offset=offset, data=chunk)
        case [3, int() as total] if total >= 0:
            return MediaEnd(total=total)
        case [4, int() as code, str() as message] if (
            code >= 0 and len(message) <= _MAX_ERROR_TEXT  # no cut: one encoding per frame
        ):
            return ProtocolErrorFrame(code=code, message=message)
    raise MalformedMessage("a media answer is CHUNK [2, offset, bytes], END [3, total] or ERROR")


# --- the fetcher's side -------------------------------------------------------------------------


class MediaDownload:
    """Collects one blob from answer frames; never holds more than the declared size.

    Feed each frame to `receive`: it returns None while more is due and the verified blob at
    END. Any error it raises ends the download; what was collected is dropped with it.
    """

    def __init__(self, digest: bytes, declared_size: int) -> None:
        """Raises TooLarge when `declared_size` exceeds MAX_BLOB_BYTES (nothing is asked)."""
        if not 0 <= declared_size <= MAX_BLOB_BYTES:
            raise TooLarge(f"media of {declared_size} bytes (at most {MAX_BLOB_BYTES})")
        self._digest = digest
        self._declared = declared_size
        self._parts: list[bytes] = []
        self._received = 0

    @property
    def received(self) -> int:
        """Bytes collected so far."""
        return self._received

    def receive(self, frame: bytes) -> bytes | None:
        """Take one answer frame.

        Raises:
            MediaRefused: the server's ERROR frame (not its fault: it will not serve us).
            MalformedMessage: a chunk out of order, or END at the wrong total.
            TooLarge: more bytes than the declared size.
            DigestMismatch: the complete bytes do not hash to the digest.
        """
        answer = decode_answer(frame)
        if isinstance(answer, ProtocolErrorFrame):
            raise MediaRefused(answer.code, answer.message)
        if isinstance(answer, MediaChunk):
            if answer.offset != self._received:
                raise MalformedMessage(f"chunk at {answer.offset}, expected {self._received}")
            if self._received + len(answer.data) > self._declared:
                raise TooLarge(f"more than the declared {self._declared} bytes")
            self._parts.append(answer.data)
            self._received += len(answer.data)
            return None
        if answer.total != self._received or answer.total != self._declared:
            raise MalformedMessage(
                f"END at {answer.total} bytes: received {self._received}, declared {self._declared}"
            )
        data = b"".join(self._parts)
        self._parts = []
        if hashlib.sha256(data).digest() != self._digest:
            raise DigestMismatch("the bytes served do not hash to the digest asked for")
        return data
