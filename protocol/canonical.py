"""Deterministic CBOR (RFC 8949 §4.2.1) for everything we sign or hash, SPEC §6.

Decoding is strict: the input must be exactly the canonical encoding of what it decodes
to, so one value has one byte string, and a signature or a message id can never be replayed
under another encoding. Only the CBOR subset of SPEC §6.1 is accepted (integers, byte and text
strings, arrays, null); tags, floats, booleans, maps, indefinite lengths and trailing bytes are
rejected.
"""

from __future__ import annotations

from typing import Final

import cbor2

from .errors import MalformedMessage, TooLarge

__all__ = ["MAX_NESTING", "CborValue", "decode_canonical", "encode_canonical", "read_kept"]

MAX_NESTING: Final = 4
"""Deepest array nesting any of our structures uses; deeper input is malformed."""

CborValue = int | bytes | str | None | list["CborValue"]


def encode_canonical(value: CborValue) -> bytes:
    """The deterministic encoding of `value` (shortest heads, definite lengths)."""
    return cbor2.dumps(value, canonical=True)


_SCALARS: Final = frozenset({int, bytes, str, type(None)})
"""The exact types cbor2 decodes the subset's scalars to (bool is not int here)."""


def _check_subset(value: object, depth: int) -> None:
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            raise MalformedMessage("CBOR nesting too deep")
        for item in value:
            if type(item) not in _SCALARS:  # the common case without a call per item
                _check_subset(item, depth + 1)
    elif isinstance(value, bool) or not (value is None or isinstance(value, int | bytes | str)):
        raise MalformedMessage(f"CBOR type {type(value).__name__} is not allowed")


def decode_canonical(data: bytes, *, max_bytes: int) -> CborValue:
    """Decode `data`, which must be the canonical encoding of a value in the SPEC §6.1 subset.

    Raises:
        TooLarge: `data` is longer than `max_bytes` (checked before parsing).
        MalformedMessage: anything else wrong, including a non-canonical encoding.
    """
    value = read_kept(data, max_bytes=max_bytes)
    _check_subset(value, 0)
    if encode_canonical(value) != data:
        raise MalformedMessage("not the canonical CBOR encoding (RFC 8949 §4.2.1)")
    return value


def read_kept(data: bytes, *, max_bytes: int) -> CborValue:
    """Decode bytes that `decode_canonical` accepted before this node kept them (its own
    store): the encoding is not checked again, since re-encoding to compare costs three times
    the decode. Never for bytes from a peer or a client (so it is no `decode_*`: the edge's
    decoders are listed in tests/protocol/test_decoders.py).

    Raises:
        TooLarge: `data` is longer than `max_bytes` (checked before parsing).
        MalformedMessage: not CBOR at all (damaged).
    """
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types on hostile input; all mean "malformed"
        raise MalformedMessage(f"not CBOR: {exc}") from None
    return value  # type: ignore[no-any-return]
