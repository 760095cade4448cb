"""Inbound stream bounds (protocol/inbound.py, SPEC §10.4): counts per peer and in all, bytes."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.errors import Busy, ErrorCode, TooLarge, TooManyStreams
from hearthmesh.protocol.inbound import InboundLedger, InboundPolicy
from hearthmesh.protocol.standing import StandingPolicy, refusal_points


def test_a_peer_past_its_cap_is_refused_and_charged_while_others_still_open() -> None:
    ledger = InboundLedger(InboundPolicy(max_streams_per_peer=3, max_streams=10))
    for _ in range(3):
        ledger.open("mallory")
    with pytest.raises(TooManyStreams):
        ledger.open("mallory")
    ledger.open("honest")
    assert ledger.streams_of("mallory") == 3 and ledger.streams == 4
    ledger.close("mallory")
    ledger.open("mallory")  # a slot freed is a slot again
    # its own excess costs it; a full node costs no one
    policy = StandingPolicy()
    assert refusal_points(ErrorCode.TOO_MANY_STREAMS, policy, whole_frame=False) > 0
    assert refusal_points(ErrorCode.BUSY, policy, whole_frame=False) == 0


def test_the_total_cap_refuses_everyone_as_busy() -> None:
    ledger = InboundLedger(InboundPolicy(max_streams_per_peer=5, max_streams=6))
    for peer in ("a", "b", "c"):
        ledger.open(peer)
        ledger.open(peer)
    with pytest.raises(Busy):
        ledger.open("d")
    for peer in ("a", "b", "c"):
        ledger.close(peer)
        ledger.close(peer)
    assert ledger.streams == 0
    ledger.close("never-opened")  # an unknown close changes nothing
    assert ledger.streams == 0


def test_bytes_of_partial_frames_stay_under_the_budget_and_each_peers_share() -> None:
    policy = InboundPolicy(max_buffered_bytes=3 << 20, max_buffered_bytes_per_peer=2 << 20)
    ledger = InboundLedger(policy)
    frame = (1 << 20) - 1
    held = [ledger.reserve("mallory", frame) for _ in range(200)]
    assert held.count(True) == 2  # its share
    assert ledger.reserve("honest", frame)  # the rest of the budget is still there for others
    assert not ledger.reserve("honest", frame)  # the whole budget is spent
    assert ledger.buffered_bytes == ledger.peak_buffered_bytes == 3 * frame
    ledger.release("mallory", frame)
    assert ledger.buffered_bytes_of("mallory") == frame
    assert ledger.reserve("other", frame)
    assert ledger.peak_buffered_bytes <= 3 << 20


def test_take_says_whose_excess_refused_bytes_are() -> None:
    """Bytes held unread for a peer (WebRTC streams, SPEC §10.11): past its own share it is
    the peer's excess (`TOO_LARGE`, charged), past the whole budget no one's (`BUSY`)."""
    ledger = InboundLedger(InboundPolicy(max_buffered_bytes_per_peer=10, max_buffered_bytes=15))
    ledger.take("a", 10)
    with pytest.raises(TooLarge):
        ledger.take("a", 1)
    ledger.take("b", 5)
    with pytest.raises(Busy):
        ledger.take("b", 1)
    assert (ledger.buffered_bytes, ledger.buffered_bytes_of("a")) == (15, 10)
    assert not ledger.reserve("c", 1)
