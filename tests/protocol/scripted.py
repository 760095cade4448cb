"""Hypothesis strategies of hostile bytes that cost the engine one choice per example.

Hypothesis spends ~0.1 ms of bookkeeping per choice a strategy draws (spans, the choice tree,
the mutator) on top of ~0.5 ms per example: an arbitrary CBOR value drawn as a tree of
`st.one_of` scalars cost ~3 ms an example and a mutated sample ~1.7 ms, which made
tests/protocol/test_decoders.py the suite's costliest file. These strategies draw one byte
string of fixed size (a `Script`) and read it as the stream of decisions the tree of draws
would have made, so each example costs about the floor. Shrinking still leads somewhere
small: the engine shrinks the script's bytes toward 0, and 0 reads as the first, smallest
choice (one edit, at the start, of the first sample; a short array of small integers).
"""

from __future__ import annotations

import functools
from typing import Final

from hypothesis import strategies as st

from hearthmesh.protocol.canonical import CborValue, decode_canonical, encode_canonical

__all__ = ["Script", "arbitrary_cbor", "mutated", "mutated_text", "restructured"]

_ALPHABET: Final = (
    "a0 ~\x00\x7f\u00e9\u00ff\u0100\u07ff\u0800\u20ac\uffff\U00010000\U0010ffff\U0001f44d"
)
"""Text characters: ASCII and its ends, and each UTF-8 length at its boundaries."""

_SPECIAL: Final[tuple[CborValue, ...]] = (
    None, 0, 1, -1, 2, b"", "", [], (1 << 64) - 1, -(1 << 64)
)  # fmt: skip
"""Values at the edges of the CBOR heads and of what decoders expect."""


class Script:
    """A drawn byte string read as a stream of small decisions; reads past its end give 0."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        self._at += 1
        return self._data[self._at - 1] if self._at <= len(self._data) else 0

    def below(self, n: int) -> int:
        """An integer in [0, n) (n < 65,536 keeps it near uniform)."""
        return (self.byte() << 8 | self.byte()) % n if n > 1 else 0

    def take(self, n: int) -> bytes:
        out = self._data[self._at : self._at + n]
        self._at += n
        return out.ljust(n, b"\0")

    def text(self, n: int) -> str:
        return "".join(_ALPHABET[b % len(_ALPHABET)] for b in self.take(n))


def _scripts(size: int) -> st.SearchStrategy[Script]:
    return st.binary(min_size=size, max_size=size).map(Script)


def _scalar(script: Script, fixed: tuple[bytes, ...]) -> CborValue:
    kind = script.byte() % 6
    if kind == 0:  # anywhere in CBOR's integer range, [-2**64, 2**64)
        value = int.from_bytes(script.take(script.byte() % 9), "big")
        return -value - 1 if script.byte() & 1 else value
    if kind == 1:
        return script.byte() % 44 - 3
    if kind == 2:
        return script.take(script.byte() % 71)
    if kind == 3:  # a well-formed structure where another is expected
        return fixed[script.byte() % len(fixed)]
    if kind == 4:
        return script.text(script.byte() % 13)
    return None


def _value(script: Script, fixed: tuple[bytes, ...], leaves: list[int], depth: int) -> CborValue:
    """A scalar, or an array of up to 7 values (3 in 4 at the top, 1 in 3 below; 5 deep at
    most, one past what decoders accept), `leaves[0]` scalars in all."""
    is_array = script.byte() % 4 != 0 if depth == 0 else script.byte() % 3 == 0
    if not is_array or depth >= 5 or leaves[0] <= 0:
        leaves[0] -= 1
        return _scalar(script, fixed)
    return [_value(script, fixed, leaves, depth + 1) for _ in range(script.byte() % 8)]


def arbitrary_cbor(fixed: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Canonical CBOR of an arbitrary value of the SPEC §6.1 subset, up to 24 scalars, some
    of them `fixed` (well-formed encodings of our structures)."""
    return _scripts(160).map(lambda script: encode_canonical(_value(script, fixed, [24], 0)))


def _mutate(samples: tuple[bytes, ...], script: Script) -> bytes:
    data = bytearray(samples[script.byte() % len(samples)])
    for _ in range(1 + script.byte() % 4):
        action, at = script.byte() % 4, script.below(max(len(data), 1))
        if action == 0 and data:
            data[at] = script.byte()
        elif action == 1:
            del data[at:]
        elif action == 2:
            data[at:at] = script.take(1 + script.byte() % 4)
        elif data:
            del data[at]
    return bytes(data)


def mutated(samples: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """One of `samples` with 1 to 4 byte edits: a byte flipped, the tail cut, 1 to 4 bytes
    inserted, a byte deleted."""
    return _scripts(2 + 4 * 8).map(functools.partial(_mutate, samples))


def _special(script: Script, fixed: tuple[bytes, ...]) -> CborValue:
    kind = script.byte() % 3
    if kind == 0:
        return _SPECIAL[script.byte() % len(_SPECIAL)]
    if kind == 1:  # a text past the one-byte length heads, in characters of 1 to 4 bytes
        length = 250 + script.byte() % 51
        return (script.text(3) * length)[:length]
    return _scalar(script, fixed)


def _reshaped(script: Script, value: CborValue, fixed: tuple[bytes, ...]) -> CborValue:
    """`value` with one node replaced, or one array grown or shrunk at a random place."""
    if not isinstance(value, list):
        return _special(script, fixed)
    action = script.byte() % 3 if value else 0
    at = script.below(len(value) + 1 if action == 0 else len(value))
    if action == 0:
        return [*value[:at], _special(script, fixed), *value[at:]]
    if action == 1:
        return [*value[:at], *value[at + 1 :]]
    return [*value[:at], _reshaped(script, value[at], fixed), *value[at + 1 :]]


@functools.cache
def _decoded(sample: bytes) -> CborValue:
    return decode_canonical(sample, max_bytes=1 << 20)  # never mutated: `_reshaped` copies


def _restructure(samples: tuple[bytes, ...], fixed: tuple[bytes, ...], script: Script) -> bytes:
    value = _decoded(samples[script.byte() % len(samples)])
    for _ in range(1 + script.byte() % 2):
        value = _reshaped(script, value, fixed)
    return encode_canonical(value)


def restructured(samples: tuple[bytes, ...], fixed: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """One of `samples` (each canonical CBOR) with one or two nodes of its value replaced by
    an edge value (or one of `fixed`), or an array grown or shrunk: well-formed CBOR of the
    wrong shape."""
    return _scripts(64).map(functools.partial(_restructure, samples, fixed))


def _mutate_text(samples: tuple[str, ...], script: Script) -> str:
    text = samples[script.byte() % len(samples)]
    at = script.below(len(text) + 1)
    cut = script.byte() % 4
    return text[:at] + script.text(script.byte() % 4) + text[at + cut :]


def mutated_text(samples: tuple[str, ...]) -> st.SearchStrategy[str]:
    """One of `samples` with up to 3 characters cut at one place and up to 3 inserted."""
    return _scripts(8).map(functools.partial(_mutate_text, samples))
