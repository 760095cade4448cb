"""What each peer told of its levels, and whether a send waits on it (SPEC §20.7.1), with the
time passed in."""

from __future__ import annotations

from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.levels_book import MAX_PEERS_KNOWN, RETRY_MS, LevelsBook, Step

ALL = frozenset(Level)
OLDER = frozenset({Level.CORE, Level.IM, Level.MULTI_DEVICE, Level.RELAY, Level.E2EE})


def test_a_peer_that_never_told_is_awaited_on_its_hello_then_known() -> None:
    book = LevelsBook()
    assert book.step("bob", 0) is Step.ASK  # not connected: dialled and asked
    book.connected("bob")
    assert book.step("bob", 0) is Step.AWAIT_HELLO  # its hello tells: no stream of ours
    book.told("bob", ALL)
    assert book.step("bob", 0) is Step.KNOWN and book.of("bob") == ALL


def test_what_a_peer_told_stands_across_a_reconnection_until_its_hello_replaces_it() -> None:
    """A reconnected home of this release is never asked, nor waited on: at a 50-home
    group's formation each new connection made the creator ask again (SPEC §20.6)."""
    book = LevelsBook()
    book.connected("bob")
    book.told("bob", ALL)
    book.disconnected("bob")
    book.connected("bob")
    assert book.step("bob", 0) is Step.KNOWN and book.of("bob") == ALL
    book.told("bob", OLDER)  # its new hello: back a release with a level withheld
    assert book.of("bob") == OLDER


def test_a_peer_greeted_on_hello_0_is_asked_at_once() -> None:
    """A release before hello/1 tells nothing in its hello: what it told before (another
    release) is dropped, and a try that failed lately holds no ask back."""
    book = LevelsBook()
    book.told("bob", ALL)
    book.connected("bob")
    book.greeted_older("bob")
    assert book.of("bob") is None and book.step("bob", 0) is Step.ASK
    book.missed("carol", 0)
    book.connected("carol")
    book.greeted_older("carol")
    assert book.step("carol", 1) is Step.ASK


def test_a_peer_that_missed_is_not_waited_on_for_a_while_however_often_it_connects() -> None:
    """An ask (or a wait for a hello) that got no answer holds a send back from that home for
    RETRY_MS, new connections notwithstanding; its hello tells the levels when it lands."""
    book = LevelsBook()
    book.connected("bob")
    book.missed("bob", 1_000)
    for _ in range(3):  # the connection came and went
        book.disconnected("bob")
        book.connected("bob")
        assert book.step("bob", 1_000 + RETRY_MS - 1) is Step.NOT_NOW
    assert book.step("bob", 1_000 + RETRY_MS) is Step.AWAIT_HELLO
    book.told("bob", ALL)  # the hello landed
    assert book.step("bob", 1_000 + RETRY_MS) is Step.KNOWN


def test_a_failed_hello_or_a_gone_peer_is_no_longer_awaited() -> None:
    book = LevelsBook()
    book.connected("bob")
    book.hello_failed("bob")
    assert book.step("bob", 0) is Step.ASK
    book.connected("carol")
    book.disconnected("carol")
    assert book.step("carol", 0) is Step.ASK


def test_an_answer_kept_survives_a_miss() -> None:
    book = LevelsBook()
    book.told("bob", OLDER)
    book.missed("bob", 0)
    assert book.step("bob", 0) is Step.KNOWN and book.of("bob") == OLDER


def test_every_table_is_bounded_and_the_oldest_goes_first() -> None:
    book = LevelsBook()
    for n in range(MAX_PEERS_KNOWN + 1):
        book.told(f"told-{n}", ALL)
        book.connected(f"greeted-{n}")
        book.missed(f"missed-{n}", 0)
    assert book.of("told-0") is None and book.of(f"told-{MAX_PEERS_KNOWN}") == ALL
    assert book.step("greeted-0", RETRY_MS) is Step.ASK  # no longer awaited
    assert book.step(f"greeted-{MAX_PEERS_KNOWN}", 0) is Step.AWAIT_HELLO
    assert book.step("missed-0", 1) is Step.ASK  # its miss forgotten
    assert book.step(f"missed-{MAX_PEERS_KNOWN}", 1) is Step.NOT_NOW
