"""Capability levels on `/hearthmesh/caps/0` (SPEC §20.5): one encoding, unknown names
skipped, anything else refused."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.capabilities import (
    MAX_CAPS_BYTES,
    Level,
    decode_caps_answer,
    decode_caps_request,
    encode_caps_answer,
    encode_caps_request,
    speak,
)
from hearthmesh.protocol.errors import MalformedMessage, TooLarge


def test_an_answer_names_its_levels_sorted_once_and_decodes_to_them() -> None:
    levels = frozenset({Level.RELAY, Level.CORE, Level.IM})
    wire = encode_caps_answer(levels)
    assert wire == encode_canonical([1, ["core", "im", "relay"]])
    assert decode_caps_answer(wire) == levels
    decode_caps_request(encode_caps_request())


def test_a_level_this_implementation_does_not_know_is_skipped() -> None:
    wire = encode_canonical([1, ["core", "quantum", "relay"]])
    assert decode_caps_answer(wire) == {Level.CORE, Level.RELAY}


@pytest.mark.parametrize(
    "value",
    [
        [1, ["im", "core"]],  # not sorted
        [1, ["core", "core"]],  # twice
        [1, ["core", 5]],
        [1, [""]],
        [1, ["x" * 33]],
        [1, [f"l{i:02}" for i in range(33)]],
        [2, ["core"]],
        [1, "core"],
        [0],
    ],
)
def test_any_other_answer_is_malformed(value: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        decode_caps_answer(encode_canonical(value))  # type: ignore[arg-type]


def test_a_request_is_exactly_zero_and_bounded() -> None:
    for value in ([1], [0, 0], 0):
        with pytest.raises(MalformedMessage):
            decode_caps_request(encode_canonical(value))  # type: ignore[arg-type]
    with pytest.raises(TooLarge):
        decode_caps_request(encode_canonical([0, b"x" * MAX_CAPS_BYTES]))


def test_a_revised_form_needs_every_home_to_have_advertised_it() -> None:
    """SPEC §20.7: a home that advertised nothing (no capability protocol) is older; with no
    answered home at all nothing holds the revised form back."""
    both = frozenset({Level.CORE, Level.ADDRESSED_RECEIPTS})
    assert speak([both, both], Level.ADDRESSED_RECEIPTS)
    assert not speak([both, frozenset({Level.CORE})], Level.ADDRESSED_RECEIPTS)
    assert not speak([both, frozenset()], Level.ADDRESSED_RECEIPTS)
    assert speak([], Level.ADDRESSED_RECEIPTS)
    assert decode_caps_answer(encode_caps_answer(frozenset(Level))) == frozenset(Level)
