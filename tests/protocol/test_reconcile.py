"""Set reconciliation (SPEC §21): exact cases, the codec, properties and the size bounds."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearthmesh.protocol import errors
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.digest import HISTORY_DIGEST_DOMAIN, HistoryDigest, history_digest
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import (
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
    UnsupportedVersion,
)
from hearthmesh.protocol.hlc import Timestamp, encode_timestamp
from hearthmesh.protocol.reconcile import (
    FINGERPRINT_DOMAIN,
    MAX_MESSAGE_BYTES,
    MIN_FRAME_LIMIT_BYTES,
    Range,
    RangeMode,
    ReconcileMessage,
    Reconciler,
    SortedItems,
    decode_message,
    encode_message,
    fingerprint,
    item_key,
    separating_bound,
)
from tests.conftest import examples

BASE_MS = 1_700_000_000_000


@functools.cache  # the 100,000-event tests use each item 3-4 times (their sorts, `ids`)
def item(n: int) -> tuple[Timestamp, MessageId]:
    """Event n: one second apart, id = SHA-256 of n (a stand-in for a real message id)."""
    return (
        Timestamp(wall_ms=BASE_MS + n * 1000, counter=n % 3),
        MessageId(hashlib.sha256(n.to_bytes(8, "big")).digest()),
    )


def ids(numbers: Iterable[int]) -> set[MessageId]:
    return {item(n)[1] for n in numbers}


@dataclass(kw_only=True)
class Outcome:
    messages: list[bytes] = field(default_factory=list)
    have: dict[str, list[MessageId]] = field(default_factory=lambda: {"a": [], "b": []})
    need: dict[str, list[MessageId]] = field(default_factory=lambda: {"a": [], "b": []})

    @property
    def round_trips(self) -> int:
        return math.ceil(len(self.messages) / 2)

    @property
    def total_bytes(self) -> int:
        return sum(len(m) for m in self.messages)


def drive(a: Reconciler, b: Reconciler, *, max_messages: int = 2_000) -> Outcome:
    """Run a (initiator) against b until both are done; every message is recorded."""
    outcome = Outcome()
    message: bytes | None = a.initiate()
    sides = [("b", b), ("a", a)]
    turn = 0
    while message is not None:
        outcome.messages.append(message)
        assert len(outcome.messages) <= max_messages, "reconciliation did not terminate"
        name, side = sides[turn % 2]
        step = side.reconcile(message)
        outcome.have[name].extend(step.have)
        outcome.need[name].extend(step.need)
        message = step.reply
        turn += 1
    assert a.done and b.done
    return outcome


def reconcile_sets(
    a_numbers: Iterable[int],
    b_numbers: Iterable[int],
    *,
    a_items: SortedItems | None = None,
    **options: int,
) -> tuple[Outcome, set[int], set[int]]:
    """Reconcile events `a_numbers` against `b_numbers`; `a_items`, when given, are
    `a_numbers` already sorted (`every_event`)."""
    a_set, b_set = set(a_numbers), set(b_numbers)
    a = Reconciler(a_items or SortedItems(item(n) for n in a_set), **options)
    b = Reconciler(SortedItems(item(n) for n in b_set), **options)
    return drive(a, b), a_set, b_set


EVERY: Final = 100_000


@pytest.fixture(scope="module")
def every_event() -> SortedItems:
    """Events 0 to 99,999, sorted once for the module's 100,000-event tests, which reconcile
    them against three replicas (each sort of them is ~0.15 s of CPU, half those tests' cost);
    a Reconciler only reads its items."""
    return SortedItems(item(n) for n in range(EVERY))


def assert_exact(outcome: Outcome, a_set: set[int], b_set: set[int]) -> None:
    for name in ("a", "b"):  # each id is reported once
        assert len(outcome.have[name]) == len(set(outcome.have[name]))
        assert len(outcome.need[name]) == len(set(outcome.need[name]))
    assert set(outcome.have["a"]) == ids(a_set - b_set) == set(outcome.need["b"])
    assert set(outcome.need["a"]) == ids(b_set - a_set) == set(outcome.have["b"])


# --- items, bounds, fingerprints (SPEC §21.1-§21.3) -------------------------------------------


def test_item_key_orders_by_hlc_then_id() -> None:
    hlc, message_id = item(5)
    assert item_key(hlc, message_id) == encode_timestamp(hlc) + message_id
    assert item_key(*item(5)) < item_key(*item(6))
    with pytest.raises(LocalProtocolError):
        item_key(hlc, MessageId(b"short"))


def test_separating_bound_is_the_shortest_prefix_above_the_previous_key() -> None:
    assert separating_bound(b"\x01\x02\x03", b"\x01\x05\x00") == b"\x01\x05"
    assert separating_bound(b"\x01\x02\x03", b"\x01\x02\x04") == b"\x01\x02\x04"
    keys = sorted(item_key(*item(n)) for n in range(50))
    for previous, key in itertools.pairwise(keys):
        bound = separating_bound(previous, key)
        assert previous < bound <= key and key.startswith(bound)
        assert not previous < bound[:-1]  # one byte shorter no longer separates
    with pytest.raises(LocalProtocolError):
        separating_bound(b"\x02", b"\x01")


def test_fingerprint_is_truncated_sha256_of_sum_and_count() -> None:
    a, b = item(1)[1], item(2)[1]
    total = (int.from_bytes(a, "big") + int.from_bytes(b, "big")) % (1 << 256)
    expect = hashlib.sha256(FINGERPRINT_DOMAIN + total.to_bytes(32, "big") + (2).to_bytes(8, "big"))
    items = SortedItems([item(2), item(1)])
    assert fingerprint(items.id_sum(0, 2), 2) == expect.digest()[:16]
    assert fingerprint(0, 0) != fingerprint(0, 1)  # the count is part of it


def test_fingerprint_is_order_independent_and_incremental() -> None:
    items = SortedItems(item(n) for n in range(40))
    forward = sum(int.from_bytes(item(n)[1], "big") for n in range(40))
    assert fingerprint(items.id_sum(0, 40), 40) == fingerprint(forward, 40)
    assert (items.id_sum(0, 10) + items.id_sum(10, 40)) % (1 << 256) == items.id_sum(0, 40)


def test_sorted_items_refuses_one_id_under_two_timestamps() -> None:
    hlc, message_id = item(1)
    later = Timestamp(wall_ms=hlc.wall_ms + 1, counter=0)
    with pytest.raises(LocalProtocolError):
        SortedItems([(hlc, message_id), (later, message_id)])
    assert len(SortedItems([item(1), item(1)])) == 1


# --- exact small exchanges (SPEC §21.5, §21.6) ---------------------------------------------------


def test_small_sets_settle_in_one_round_trip_with_exact_have_and_need() -> None:
    outcome, a_set, b_set = reconcile_sets({1, 2, 3}, {2, 3, 4})
    assert len(outcome.messages) == 2
    assert outcome.have["a"] == [item(1)[1]] and outcome.need["a"] == [item(4)[1]]
    assert outcome.have["b"] == [item(4)[1]] and outcome.need["b"] == [item(1)[1]]
    first = decode_message(outcome.messages[0])
    assert [r.mode for r in first.ranges] == [RangeMode.ID_LIST]
    reply = decode_message(outcome.messages[1])
    assert [r.mode for r in reply.ranges] == [RangeMode.DIFF]
    assert reply.ranges[0].bits == b"\x80"  # b lacks a's first item (1), holds 2 and 3
    assert_exact(outcome, a_set, b_set)


def test_two_empty_replicas_agree_immediately() -> None:
    outcome, _, _ = reconcile_sets(set(), set())
    # [0, [null, ID_LIST, h'']] then [0, [null, DIFF, h'', h'']]
    assert [m.hex() for m in outcome.messages] == ["820083f60240", "820084f6034040"]
    assert all(not outcome.have[s] and not outcome.need[s] for s in "ab")


def test_equal_large_sets_exchange_one_fingerprint() -> None:
    outcome, _, _ = reconcile_sets(range(1000), range(1000))
    assert len(outcome.messages) == 2
    assert decode_message(outcome.messages[1]).ranges == ()  # "all equal": nothing to say


def test_message_after_the_exchange_ended_is_refused() -> None:
    a = Reconciler(SortedItems([item(1)]))
    b = Reconciler(SortedItems([item(1)]))
    first = a.initiate()
    step = b.reconcile(first)
    assert step.done and b.done
    with pytest.raises(RemoteProtocolError):
        b.reconcile(first)


def test_initiate_twice_is_a_caller_bug() -> None:
    a = Reconciler(SortedItems([]))
    a.initiate()
    with pytest.raises(LocalProtocolError):
        a.initiate()


def test_limits_outside_the_allowed_ranges_are_caller_bugs() -> None:
    with pytest.raises(LocalProtocolError):
        Reconciler(SortedItems([]), frame_limit_bytes=MIN_FRAME_LIMIT_BYTES - 1)
    with pytest.raises(LocalProtocolError):
        Reconciler(SortedItems([]), branching=1)
    with pytest.raises(LocalProtocolError):
        Reconciler(SortedItems([]), id_list_threshold=0)


def test_bad_diff_leaves_the_machine_unchanged() -> None:
    a = Reconciler(SortedItems(item(n) for n in range(5)))
    a.initiate()  # an id list of 5 items
    wrong = encode_message(
        ReconcileMessage(ranges=(Range(upper=None, mode=RangeMode.DIFF, bits=b"\x00\x00"),))
    )
    with pytest.raises(MalformedMessage):
        a.reconcile(wrong)  # 2 bytes of bits for 5 items
    padded = encode_message(
        ReconcileMessage(ranges=(Range(upper=None, mode=RangeMode.DIFF, bits=b"\x01"),))
    )
    with pytest.raises(MalformedMessage):
        a.reconcile(padded)  # padding bit set
    offered = encode_message(
        ReconcileMessage(
            ranges=(Range(upper=None, mode=RangeMode.DIFF, bits=b"\x00", ids=(item(0)[1],)),)
        )
    )
    with pytest.raises(MalformedMessage):
        a.reconcile(offered)  # "you lack" an id we hold
    assert not a.done
    good = encode_message(
        ReconcileMessage(ranges=(Range(upper=None, mode=RangeMode.DIFF, bits=b"\x80"),))
    )
    step = a.reconcile(good)
    assert step.have == [item(0)[1]] and step.need == [] and step.done


# --- properties (SPEC §21.5, §21.6) ----------------------------------------------------------


NUMBERS = st.sets(st.integers(min_value=0, max_value=600), max_size=300)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a_set=NUMBERS,
    b_set=NUMBERS,
    shared=NUMBERS,
    branching=st.integers(min_value=2, max_value=16),
    threshold=st.integers(min_value=1, max_value=16),
)
def test_any_two_sets_end_with_exact_differences(
    a_set: set[int], b_set: set[int], shared: set[int], branching: int, threshold: int
) -> None:
    outcome, a_all, b_all = reconcile_sets(
        a_set | shared, b_set | shared, branching=branching, id_list_threshold=threshold
    )
    assert_exact(outcome, a_all, b_all)
    # Without frame cuts each round trip descends one level of the split tree.
    largest = max(len(a_all), len(b_all), 2)
    assert outcome.round_trips <= math.ceil(math.log(largest, branching)) + 3


@settings(max_examples=examples(30), deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=1 << 32),
    only_a=st.integers(min_value=0, max_value=1500),
    only_b=st.integers(min_value=0, max_value=1500),
    shared=st.integers(min_value=0, max_value=4000),
)
def test_small_frames_still_end_with_exact_differences(
    seed: int, only_a: int, only_b: int, shared: int
) -> None:
    # Thousands of ids do not fit a 4 KB frame: the tail rule of SPEC §21.6 carries the rest.
    numbers = random.Random(seed).sample(range(20_000), only_a + only_b + shared)
    common = numbers[:shared]
    a_set = set(common) | set(numbers[shared : shared + only_a])
    b_set = set(common) | set(numbers[shared + only_a :])
    outcome, a_all, b_all = reconcile_sets(a_set, b_set, frame_limit_bytes=MIN_FRAME_LIMIT_BYTES)
    assert_exact(outcome, a_all, b_all)
    assert max(len(m) for m in outcome.messages) <= MIN_FRAME_LIMIT_BYTES


def test_in_sync_replicas_of_100000_events_finish_in_3_round_trips_under_4_kb(
    every_event: SortedItems,
) -> None:
    outcome = drive(Reconciler(every_event), Reconciler(every_event))
    assert outcome.round_trips <= 3
    assert outcome.total_bytes < 4096
    assert all(not outcome.have[s] and not outcome.need[s] for s in "ab")


def test_ten_differing_events_cost_bytes_proportional_to_the_difference(
    every_event: SortedItems,
) -> None:
    # Each differing event is found by at most ceil(log16(100,000)) = 5 splits of 16
    # fingerprint ranges (≤ 26 bytes each: head, 1-8 byte bound, mode, 17-byte fingerprint),
    # one id list of ≤ 16 ids (≤ 540 bytes) and a DIFF (≤ 80 bytes): 2,700 bytes per event;
    # spread-out differences are the worst case (clustered ones share their splits).
    every = set(range(EVERY))
    missing = set(range(5, EVERY, EVERY // 10))
    outcome, a_set, b_set = reconcile_sets(every, every - missing, a_items=every_event)
    assert_exact(outcome, a_set, b_set)
    assert outcome.total_bytes < 4096 + 2700 * len(missing)
    clustered = set(range(EVERY - 10, EVERY))
    outcome, a_set, b_set = reconcile_sets(every, every - clustered, a_items=every_event)
    assert_exact(outcome, a_set, b_set)
    assert outcome.total_bytes < 4096


def test_new_device_learns_every_id_within_the_frame_limit() -> None:
    outcome, a_set, b_set = reconcile_sets(
        set(), range(5000), frame_limit_bytes=MIN_FRAME_LIMIT_BYTES
    )
    assert_exact(outcome, a_set, b_set)
    assert max(len(m) for m in outcome.messages) <= MIN_FRAME_LIMIT_BYTES
    # ids dominate: 32 bytes each plus a few percent of framing
    assert outcome.total_bytes < 5000 * 32 * 1.15


# --- codec (SPEC §21.4, §21.7) ----------------------------------------------------------------


BOUNDS = st.lists(st.binary(min_size=1, max_size=44), max_size=12, unique=True).map(sorted)
MODES = st.sampled_from([RangeMode.FINGERPRINT, RangeMode.ID_LIST, RangeMode.DIFF])
ID = st.binary(min_size=32, max_size=32).map(MessageId)


@st.composite
def messages(draw: st.DrawFn) -> ReconcileMessage:
    bounds: list[bytes | None] = list(draw(BOUNDS))
    if draw(st.booleans()):
        bounds.append(None)
    ranges: list[Range] = []
    for index, upper in enumerate(bounds):
        can_skip = index < len(bounds) - 1 and (not ranges or ranges[-1].mode != RangeMode.SKIP)
        mode = draw(MODES | st.just(RangeMode.SKIP)) if can_skip else draw(MODES)
        some_ids = tuple(draw(st.lists(ID, max_size=3, unique=True)))
        if mode is RangeMode.FINGERPRINT:
            ranges.append(
                Range(upper=upper, mode=mode, fingerprint=draw(st.binary(min_size=16, max_size=16)))
            )
        elif mode is RangeMode.ID_LIST:
            ranges.append(Range(upper=upper, mode=mode, ids=some_ids))
        elif mode is RangeMode.DIFF:
            ranges.append(Range(upper=upper, mode=mode, bits=draw(st.binary()), ids=some_ids))
        else:
            ranges.append(Range(upper=upper, mode=mode))
    return ReconcileMessage(ranges=tuple(ranges))


@given(messages())
def test_messages_round_trip(message: ReconcileMessage) -> None:
    assert decode_message(encode_message(message)) == message


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_remote_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_message(data)


@given(st.binary(max_size=200))
def test_reconciling_arbitrary_bytes_raises_only_remote_protocol_errors(data: bytes) -> None:
    machine = Reconciler(SortedItems(item(n) for n in range(40)))
    with contextlib.suppress(RemoteProtocolError):
        machine.reconcile(data)


def test_oversized_message_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import cbor2

    def explode(_: bytes) -> object:
        raise AssertionError("parsed")

    monkeypatch.setattr(cbor2, "loads", explode)
    with pytest.raises(TooLarge):
        decode_message(b"\x80" * (MAX_MESSAGE_BYTES + 1))


def _raw(*ranges: Any, version: Any = 0) -> bytes:
    return encode_canonical([version, *ranges])


FP = b"\x11" * 16
MALFORMED = {
    "not an array": encode_canonical(0),
    "empty array": encode_canonical([]),
    "bound shares too much": _raw([b"\x01\x05", 1, FP]),
    "bound decreases": _raw([b"\x00\x05", 0], [b"\x00\x04", 1, FP]),
    "bound shared prefix not maximal": _raw([b"\x00\x05", 0], [b"\x00\x05\x01", 1, FP]),
    "bound suffix empty": _raw([b"\x00", 1, FP]),
    "bound longer than a key": _raw([b"\x00" + b"\x01" * 45, 1, FP]),
    "infinity before last": _raw([None, 1, FP], [b"\x00\x05", 1, FP]),
    "bound is text": _raw(["x", 1, FP]),
    "unknown mode": _raw([None, 9]),
    "trailing skip": _raw([b"\x00\x05", 0]),
    "doubled skip": _raw([b"\x00\x05", 0], [b"\x00\x06", 0], [None, 1, FP]),
    "short fingerprint": _raw([None, 1, b"\x11" * 15]),
    "ids not a multiple of 32": _raw([None, 2, b"\x00" * 33]),
    "id listed twice": _raw([None, 2, b"\x07" * 64]),
    "diff without ids": _raw([None, 3, b""]),
    "range too long": _raw([None, 1, FP, b""]),
    "non-canonical integer": bytes.fromhex("821800f6"),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_messages_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_message(data)


def test_unknown_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion):
        decode_message(_raw([None, 1, FP], version=1))


def test_encoder_refuses_what_the_decoder_would_refuse() -> None:
    skip_last = ReconcileMessage(ranges=(Range(upper=b"\x05", mode=RangeMode.SKIP),))
    with pytest.raises(LocalProtocolError):
        encode_message(skip_last)
    unordered = ReconcileMessage(
        ranges=(
            Range(upper=b"\x05", mode=RangeMode.FINGERPRINT, fingerprint=FP),
            Range(upper=b"\x04", mode=RangeMode.FINGERPRINT, fingerprint=FP),
        )
    )
    with pytest.raises(LocalProtocolError):
        encode_message(unordered)


# --- history digest (SPEC §21.9) ---------------------------------------------------------------


def test_history_digest_is_sha256_of_the_domain_and_the_ordered_ids() -> None:
    history = [item(n)[1] for n in range(3)]
    expect = hashlib.sha256(HISTORY_DIGEST_DOMAIN + b"".join(history)).digest()
    assert history_digest(history) == expect
    assert history_digest(reversed(history)) != expect  # order matters


def test_history_digest_is_incremental() -> None:
    running = HistoryDigest()
    history = [item(n)[1] for n in range(10)]
    for message_id in history[:4]:
        running.update(message_id)
    prefix = running.copy()
    for message_id in history[4:]:
        running.update(message_id)
    assert running.digest() == history_digest(history) and running.count == 10
    assert prefix.digest() == history_digest(history[:4])
    assert running.hexdigest() == history_digest(history).hex()
    with pytest.raises(LocalProtocolError):
        running.update(MessageId(b"\x00" * 31))


# --- vectors -----------------------------------------------------------------------------------


def _load_vectors() -> dict[str, Any]:
    path = resources.files("hearthmesh.protocol").joinpath("vectors/reconcile.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


VECTORS = _load_vectors()


def _vector_items(numbers: list[int]) -> SortedItems:
    return SortedItems(item(n) for n in numbers)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: f"tc{c['id']}")
def test_reconcile_vectors_valid(case: dict[str, Any]) -> None:
    if case["op"] == "fingerprint":
        id_sum = sum(int(i, 16) for i in case["ids"])
        assert fingerprint(id_sum, len(case["ids"])).hex() == case["expect_hex"]
    elif case["op"] == "history_digest":
        history = [MessageId(bytes.fromhex(i)) for i in case["ids"]]
        assert history_digest(history).hex() == case["expect_hex"]
    else:
        a_items = [
            (Timestamp(wall_ms=w, counter=c), MessageId(bytes.fromhex(i)))
            for w, c, i in case["a_items"]
        ]
        b_items = [
            (Timestamp(wall_ms=w, counter=c), MessageId(bytes.fromhex(i)))
            for w, c, i in case["b_items"]
        ]
        options = case["options"]
        outcome = drive(
            Reconciler(SortedItems(a_items), **options), Reconciler(SortedItems(b_items), **options)
        )
        assert [m.hex() for m in outcome.messages] == case["transcript_hex"]
        for name in ("a", "b"):
            assert sorted(i.hex() for i in outcome.have[name]) == case[f"{name}_have"]
            assert sorted(i.hex() for i in outcome.need[name]) == case[f"{name}_need"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: f"tc{c['id']}")
def test_reconcile_vectors_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        decode_message(bytes.fromhex(case["hex"]))
