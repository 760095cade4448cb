"""Canonical CBOR of SPEC §6: one encoding per value, only the SPEC §6.1 subset."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.canonical import decode_canonical, encode_canonical, read_kept
from hearthmesh.protocol.errors import MalformedMessage, RemoteProtocolError, TooLarge

SCALARS = st.one_of(
    st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.none(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@given(VALUES)
def test_round_trip(value: object) -> None:
    data = encode_canonical(value)  # type: ignore[arg-type]
    try:
        assert decode_canonical(data, max_bytes=1 << 20) == value
    except MalformedMessage as exc:  # only nesting past MAX_NESTING may be refused
        assert "nesting" in str(exc)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_canonical(data, max_bytes=200)


@pytest.mark.parametrize(
    ("hex_data", "why"),
    [
        ("1817", "23 in a two-byte head"),
        ("5f4161ff", "indefinite byte string"),
        ("f5", "true"),
        ("f97e00", "a float"),
        ("a0", "a map"),
        ("c000", "a tag"),
        ("0000", "trailing byte"),
        ("8201f5", "true inside an array"),
        ("8181f97e00", "a float inside a nested array"),
        ("818182f97e0000", "a float two arrays down"),
    ],
)
def test_non_subset_or_non_canonical_is_malformed(hex_data: str, why: str) -> None:
    with pytest.raises(MalformedMessage):
        decode_canonical(bytes.fromhex(hex_data), max_bytes=100)


def test_length_is_checked_before_parsing() -> None:
    with pytest.raises(TooLarge):
        decode_canonical(b"\xff" * 101, max_bytes=100)


def test_kept_bytes_decode_to_what_the_strict_decoder_gives() -> None:
    data = encode_canonical([1, b"\x00" * 3, "text", None, [2, [3]]])
    assert read_kept(data, max_bytes=100) == decode_canonical(data, max_bytes=100)
    with pytest.raises(TooLarge):
        read_kept(b"\x00" * 101, max_bytes=100)
    with pytest.raises(MalformedMessage):
        read_kept(b"\x5f", max_bytes=100)  # damaged: not CBOR at all
