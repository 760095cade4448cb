"""Media-stream frames of SPEC §25 and the fetcher's checks (`MediaDownload`)."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.errors import (
    ErrorCode,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.media import (
    MAX_BLOB_BYTES,
    MAX_CHUNK_BYTES,
    DigestMismatch,
    MediaChunk,
    MediaDownload,
    MediaEnd,
    MediaRefused,
    answer_frames,
    decode_answer,
    decode_request,
    encode_media_error,
    encode_request,
)

BLOB = bytes(range(256)) * 2500  # 640,000 bytes: three chunks
DIGEST = hashlib.sha256(BLOB).digest()


def test_frames_round_trip_and_a_blob_goes_in_chunks() -> None:
    assert decode_request(encode_request(DIGEST)) == DIGEST
    frames = answer_frames(BLOB)
    answers = [decode_answer(f) for f in frames]
    assert [len(a.data) for a in answers if isinstance(a, MediaChunk)] == [
        MAX_CHUNK_BYTES,
        MAX_CHUNK_BYTES,
        len(BLOB) - 2 * MAX_CHUNK_BYTES,
    ]
    assert answers[-1] == MediaEnd(total=len(BLOB))
    download = MediaDownload(DIGEST, len(BLOB))
    assert [download.receive(f) for f in frames[:-1]] == [None, None, None]
    assert download.receive(frames[-1]) == BLOB
    empty = MediaDownload(hashlib.sha256(b"").digest(), 0)
    assert empty.receive(answer_frames(b"")[0]) == b""


def test_requests_over_the_limit_or_malformed_are_refused() -> None:
    with pytest.raises(TooLarge):
        decode_request(encode_canonical([1, b"\x00" * 100]))
    cases: list[CborValue] = [[1, b"\x00" * 31], [2, DIGEST], [1], [1, DIGEST, 0], "x"]
    for bad in cases:
        with pytest.raises(MalformedMessage):
            decode_request(encode_canonical(bad))


def test_the_servers_error_frame_is_a_refusal_with_its_code() -> None:
    frame = encode_media_error(NotAuthorized("not a member"))
    with pytest.raises(MediaRefused) as refused:
        MediaDownload(DIGEST, len(BLOB)).receive(frame)
    assert refused.value.refusal_code == ErrorCode.NOT_AUTHORIZED


def test_bytes_of_another_blob_are_caught_at_the_end() -> None:
    other = bytes(len(BLOB))
    download = MediaDownload(DIGEST, len(BLOB))
    *chunks, end = answer_frames(other)
    for frame in chunks:
        assert download.receive(frame) is None
    with pytest.raises(DigestMismatch):
        download.receive(end)


def test_never_more_than_the_declared_size_nor_out_of_order() -> None:
    frames = answer_frames(BLOB)
    short = MediaDownload(DIGEST, MAX_CHUNK_BYTES + 10)
    short.receive(frames[0])
    with pytest.raises(TooLarge):
        short.receive(frames[1])  # refused before it is kept: at most the declared size
    assert short.received == MAX_CHUNK_BYTES
    skipping = MediaDownload(DIGEST, len(BLOB))
    with pytest.raises(MalformedMessage):
        skipping.receive(frames[1])
    early = MediaDownload(DIGEST, len(BLOB))
    early.receive(frames[0])
    with pytest.raises(MalformedMessage):
        early.receive(encode_canonical([3, MAX_CHUNK_BYTES]))  # END before the declared size
    with pytest.raises(TooLarge):
        MediaDownload(DIGEST, MAX_BLOB_BYTES + 1)  # the upload limit, sealed (SPEC §28.1)
    with pytest.raises(TooLarge):
        decode_answer(encode_canonical([2, 0, b"\x00" * (MAX_CHUNK_BYTES + 1)]))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (decode_request, decode_answer, MediaDownload(DIGEST, len(BLOB)).receive):
        with contextlib.suppress(RemoteProtocolError, MediaRefused):
            parse(data)
