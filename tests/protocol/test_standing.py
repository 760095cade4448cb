"""The standing policy of SPEC §11.6: what refusals cost, forgiveness and bans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.standing import (
    StandingPolicy,
    StandingTable,
    answer_points,
    batch_points,
    refusal_points,
    result_points,
)

POLICY = StandingPolicy()
ID = MessageId(bytes(32))


def result(status: AckStatus, code: ErrorCode) -> DeliveryResult:
    return DeliveryResult(message_id=ID, status=status, code=int(code))


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.MALFORMED,
        ErrorCode.TOO_LARGE,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.BAD_CERTIFICATE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNKNOWN_KIND,
        ErrorCode.INVALID_IDENTIFIER,
        ErrorCode.NOT_AUTHORIZED,
    ],
)
def test_input_that_cannot_be_right_costs(code: ErrorCode) -> None:
    assert refusal_points(code, POLICY, whole_frame=True) == POLICY.frame_points
    assert refusal_points(code, POLICY, whole_frame=False) == POLICY.item_points
    assert result_points(result(AckStatus.REJECTED, code), POLICY) == POLICY.item_points


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.PROTOCOL,
        ErrorCode.CLOCK_SKEW,
        ErrorCode.QUOTA_EXCEEDED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.SEQUENCE_OVERFLOW,
        ErrorCode.NOT_FOUND,
        ErrorCode.STORAGE,
    ],
)
def test_what_may_be_right_later_costs_nothing(code: ErrorCode) -> None:
    assert refusal_points(code, POLICY, whole_frame=True) == 0
    assert result_points(result(AckStatus.REJECTED, code), POLICY) == 0


@pytest.mark.parametrize("code", list(ErrorCode))
def test_deferred_and_accepted_items_cost_nothing(code: ErrorCode) -> None:
    """DEFERRED (clock skew, quota, not yet a member) is never an offence, whatever the code."""
    for status in (AckStatus.DEFERRED, AckStatus.STORED, AckStatus.DUPLICATE, AckStatus.RELAYED):
        assert result_points(result(status, code), POLICY) == 0


def test_threshold_bans_and_nothing_before_it() -> None:
    table = StandingTable(POLICY)
    offences = POLICY.ban_points // POLICY.frame_points
    for _ in range(offences - 1):
        assert table.offend("mallory", POLICY.frame_points, 1000) is None
        assert not table.banned("mallory", 1000)
    ban = table.offend("mallory", POLICY.frame_points, 1000)
    assert ban is not None and ban.count == 1
    assert ban.until_ms == 1000 + POLICY.ban_ms
    assert table.banned("mallory", 1000 + POLICY.ban_ms - 1)
    assert not table.banned("mallory", 1000 + POLICY.ban_ms)


def test_a_ban_touches_no_other_peer() -> None:
    table = StandingTable(POLICY)
    table.offend("honest", POLICY.item_points, 0)
    while table.offend("mallory", POLICY.frame_points, 0) is None:
        pass
    assert not table.banned("honest", 0)
    assert table.points("honest", 0) == POLICY.item_points


def test_points_are_forgiven_one_per_forgive_ms() -> None:
    table = StandingTable(POLICY)
    table.offend("p", 30, 0)
    assert table.points("p", POLICY.forgive_ms - 1) == 30
    assert table.points("p", POLICY.forgive_ms) == 29
    assert table.points("p", 10 * POLICY.forgive_ms + 5) == 20
    assert table.points("p", 100 * POLICY.forgive_ms) == 0


def test_slow_offences_within_forgiveness_never_ban() -> None:
    """An occasional bad frame (a bug, a version mismatch) is forgiven before the next."""
    table = StandingTable(POLICY)
    every_ms = POLICY.frame_points * POLICY.forgive_ms
    for k in range(100):
        assert table.offend("p", POLICY.frame_points, k * every_ms) is None


def test_repeat_bans_double_up_to_the_cap() -> None:
    table = StandingTable(POLICY)
    now, lengths = 0, []
    for _ in range(14):
        while (ban := table.offend("p", POLICY.frame_points, now)) is None:
            pass
        lengths.append(ban.until_ms - now)
        now = ban.until_ms
    assert lengths[:3] == [POLICY.ban_ms, 2 * POLICY.ban_ms, 4 * POLICY.ban_ms]
    assert lengths[-1] == POLICY.max_ban_ms


def test_offences_during_a_ban_change_nothing() -> None:
    table = StandingTable(POLICY)
    while (ban := table.offend("p", POLICY.frame_points, 0)) is None:
        pass
    for _ in range(50):
        assert table.offend("p", POLICY.frame_points, 10) is None
    assert not table.banned("p", ban.until_ms)
    assert table.points("p", ban.until_ms) == 0


def test_the_table_is_bounded_and_keeps_bans() -> None:
    policy = StandingPolicy(max_peers=8)
    table = StandingTable(policy)
    while table.offend("mallory", policy.frame_points, 0) is None:
        pass
    for i in range(100):
        table.offend(f"peer{i}", 1, 0)
    assert len(table) == 8
    assert table.banned("mallory", 0)
    assert table.points("peer99", 0) == 1


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5_000)), max_size=60))
def test_points_stay_below_the_threshold_unless_banned(steps: list[tuple[int, int]]) -> None:
    table, now = StandingTable(POLICY), 0
    for points, wait_ms in steps:
        now += wait_ms
        table.offend("p", points, now)
        assert 0 <= table.points("p", now) < POLICY.ban_points


def test_a_batch_over_a_relay_bound_costs_quota_points_once() -> None:
    over = result(AckStatus.DEFERRED, ErrorCode.QUOTA_EXCEEDED)
    forged = result(AckStatus.REJECTED, ErrorCode.BAD_SIGNATURE)
    skewed = result(AckStatus.DEFERRED, ErrorCode.CLOCK_SKEW)
    assert batch_points([over, over, over], POLICY) == POLICY.quota_points
    assert batch_points([over, forged], POLICY) == POLICY.quota_points + POLICY.item_points
    assert batch_points([skewed, result(AckStatus.RELAYED, ErrorCode.PROTOCOL)], POLICY) == 0


def test_an_answer_to_our_key_request_naming_another_key_costs_a_frame() -> None:
    """SPEC §27.13.2: in a sender's answer to our key request, a key that is not what it names
    proves the answering device at fault (its Olm message opened with the identity key its
    record lists): a whole frame, as a malformed answer. An Olm message that does not open (a
    key of ours we no longer hold) and a refusal cost nothing; and an envelope's KEY_MISMATCH,
    which an honest relay may carry, still costs nothing as an item or a frame."""
    policy = StandingPolicy()
    costs = {
        code: answer_points(code, policy)
        for code in (
            ErrorCode.KEY_MISMATCH,
            ErrorCode.MALFORMED,
            ErrorCode.UNDECRYPTABLE,
            ErrorCode.NOT_LISTED,
            ErrorCode.KEY_REQUEST_DENIED,
        )
    }
    assert costs == {
        ErrorCode.KEY_MISMATCH: policy.frame_points,
        ErrorCode.MALFORMED: policy.frame_points,
        ErrorCode.UNDECRYPTABLE: 0,
        ErrorCode.NOT_LISTED: 0,
        ErrorCode.KEY_REQUEST_DENIED: 0,
    }
    for whole_frame in (True, False):
        assert refusal_points(ErrorCode.KEY_MISMATCH, policy, whole_frame=whole_frame) == 0
