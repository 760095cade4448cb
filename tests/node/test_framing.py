"""Buffered length-prefixed framing (protocol/framing.py): pure, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import LocalProtocolError, TooLarge
from hearthmesh.protocol.framing import (
    FRAME_HEADER_BYTES,
    FrameDecoder,
    encode_frame,
    encode_frames,
)


def _drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=97), max_size=40),
)
def test_frames_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    wire = encode_frames(payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        decoder.feed(wire[pos : pos + cut])
        pos += cut
        got += _drain(decoder)
    decoder.feed(wire[pos:])
    got += _drain(decoder)
    assert got == payloads
    assert decoder.buffered_bytes == 0


def test_empty_frame_is_a_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b""))
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is None


def test_frame_at_the_limit_passes_and_one_byte_more_is_rejected_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.feed(encode_frame(b"x" * 16, max_frame_bytes=16))
    assert decoder.next_frame() == b"x" * 16
    # Only the header of the oversized frame has arrived: rejected from the length alone.
    decoder.feed((17).to_bytes(FRAME_HEADER_BYTES, "big"))
    with pytest.raises(TooLarge):
        decoder.next_frame()


def test_a_hostile_length_does_not_allocate() -> None:
    decoder = FrameDecoder(max_frame_bytes=1 << 20)
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(TooLarge):
        decoder.next_frame()


def test_encoder_refuses_frames_over_the_limit() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 17, max_frame_bytes=16)


def test_long_runs_compact_the_buffer() -> None:
    decoder = FrameDecoder()
    payload = b"y" * 1000
    for _ in range(500):
        decoder.feed(encode_frame(payload))
        assert decoder.next_frame() == payload
    assert decoder.buffered_bytes == 0
