"""The hello with levels, `/hearthmesh/hello/1` (SPEC §13.3): one encoding, its levels decoded
as a capability answer's are, and neither form accepted on the other's protocol."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.errors import MalformedMessage
from hearthmesh.protocol.hello import Hello, decode_hello, encode_hello

LEVELS = frozenset({Level.CORE, Level.E2EE, Level.ADDRESSED_RECEIPTS})


@pytest.mark.parametrize("offset_ms", [None, -1500])
def test_a_hello_with_levels_names_them_sorted_and_decodes_to_itself(
    offset_ms: int | None,
) -> None:
    sent = Hello(records=(b"record",), sent_ms=9, offset_ms=offset_ms, levels=LEVELS)
    data = encode_hello(sent)
    tail = [] if offset_ms is None else [offset_ms]
    names: list[CborValue] = ["addressed-receipts", "core", "e2ee"]
    assert data == encode_canonical([1, [b"record"], 9, names, *tail])
    assert decode_hello(data, with_levels=True) == sent


def test_each_form_is_refused_on_the_other_protocol() -> None:
    plain = encode_hello(Hello(records=(), sent_ms=9))
    with_levels = encode_hello(Hello(records=(), sent_ms=9, levels=LEVELS))
    with pytest.raises(MalformedMessage):
        decode_hello(with_levels)
    with pytest.raises(MalformedMessage):
        decode_hello(plain, with_levels=True)


def test_a_name_not_known_here_is_skipped_and_a_bad_list_refused() -> None:
    newer = encode_canonical([1, [], 9, ["core", "from-a-later-release"]])
    assert decode_hello(newer, with_levels=True).levels == frozenset({Level.CORE})
    bad: tuple[list[CborValue], ...] = (
        ["e2ee", "core"],
        ["core", "core"],
        [""],
        ["x" * 33],
        [1],
        [f"l{n:02}" for n in range(33)],
    )
    for names in bad:
        with pytest.raises(MalformedMessage):
            decode_hello(encode_canonical([1, [], 9, names]), with_levels=True)
    with pytest.raises(MalformedMessage):  # no levels: the offset is not taken for them
        decode_hello(encode_canonical([1, [], 9]), with_levels=True)
