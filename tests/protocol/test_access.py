"""The one access rule of gap fetching (SPEC §26.3) and media serving (SPEC §25.3.1)."""

from __future__ import annotations

from hearthmesh.protocol.access import may_read
from hearthmesh.protocol.identity import UserId

ALICE, BOB = UserId(b"\x01" * 32), UserId(b"\x02" * 32)
HOMES = {ALICE: ("alice-home",), BOB: ("bob-home-1", "bob-home-2")}


def homes_of(user: UserId) -> tuple[str, ...]:
    return HOMES.get(user, ())


def test_a_home_of_a_reader_may_read_and_no_one_else() -> None:
    assert may_read("bob-home-2", [ALICE, BOB], own_home=False, homes_of=homes_of)
    assert not may_read("bob-home-2", [ALICE], own_home=False, homes_of=homes_of)
    assert not may_read("stranger", [ALICE, BOB], own_home=False, homes_of=homes_of)


def test_our_own_other_home_may_read_even_with_no_readers() -> None:
    assert may_read("our-other-home", [], own_home=True, homes_of=homes_of)
    assert not may_read("our-other-home", [], own_home=False, homes_of=homes_of)
