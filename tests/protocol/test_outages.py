"""Which destinations are down (protocol/outages.py, SPEC §11.5.2): parking, probes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.backoff import BACKOFF_BASE_MS, BACKOFF_CAP_MS
from hearthmesh.protocol.outages import PROBE_MAX_MS, Outages

from ..conftest import counter_rng, examples

BOB = b"\x02" * 32
CAROL = b"\x03" * 32
T0 = 1_700_000_000_000


def test_new_entries_park_only_after_two_failures_in_a_row() -> None:
    outages = Outages(rng=counter_rng())
    assert not outages.parking(BOB)
    assert outages.failed(BOB, T0)  # it was up until now
    assert not outages.parking(BOB)  # one failure may be a hiccup: new batches still try
    assert not outages.failed(BOB, T0)
    assert outages.parking(BOB)
    assert outages.reached(BOB)  # an ack from one of its homes
    assert not outages.parking(BOB) and not outages.reached(BOB)


def test_a_probe_is_due_after_the_backoff_and_only_once() -> None:
    outages = Outages(rng=counter_rng())
    outages.failed(BOB, T0)
    outages.failed(BOB, T0)
    assert outages.due_probes(T0) == []
    now = T0 + BACKOFF_BASE_MS * 2  # the delay after a second failure is at most that
    probe_ms = outages.next_probe_ms()
    assert probe_ms is not None and T0 < probe_ms <= now
    assert outages.due_probes(now) == [BOB]
    assert outages.due_probes(now) == []  # probing: not handed out twice
    assert outages.next_probe_ms() is None
    assert not outages.parking(BOB)  # the probe batch goes out
    outages.failed(BOB, now)  # the probe failed: parked again, at least half of base * 4 to wait
    assert outages.parking(BOB)
    assert outages.due_probes(now + BACKOFF_BASE_MS * 2 - 1) == []


def test_a_home_that_connects_is_probed_at_once_and_a_restart_probes_everything() -> None:
    outages = Outages(rng=counter_rng())
    for _ in range(5):
        outages.failed(BOB, T0)
        outages.failed(CAROL, T0)
    assert not outages.revive([])
    assert not outages.revive([b"\x04" * 32])  # not down: nothing to probe
    assert outages.revive([BOB])
    assert outages.due_probes(T0) == [BOB]
    restarted = Outages(rng=counter_rng())
    restarted.restored([BOB, CAROL])
    assert restarted.due_probes(T0) == [BOB, CAROL]


def test_a_long_outage_is_probed_at_least_every_probe_max() -> None:
    """Issue #12 availability (b): a healed partition brings no connection; the probe finds
    the home back. Before, its delay grew to a minute and the backlog waited 30-40 s."""
    outages = Outages(rng=counter_rng())
    now = T0
    for _ in range(20):  # a long outage: every probe failed
        outages.failed(BOB, now)
        now += BACKOFF_CAP_MS
        assert outages.due_probes(now) == [BOB]
    outages.failed(BOB, now)
    assert outages.due_probes(now + PROBE_MAX_MS) == [BOB]


def test_a_home_that_connects_during_a_probe_is_probed_again_when_it_ends() -> None:
    outages = Outages(rng=counter_rng())
    for _ in range(5):
        outages.failed(BOB, T0)
    now = T0 + PROBE_MAX_MS
    assert outages.due_probes(now) == [BOB]  # a probe dials while the home is still away
    assert not outages.revive([BOB])  # it connects now
    outages.failed(BOB, now)  # that probe's dial had failed
    assert outages.due_probes(now) == [BOB]  # no backoff: the home is there
    outages.failed(BOB, now)
    assert outages.due_probes(now) == []  # an ordinary failure waits again


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["failed", "homeless", "reached", "forget", "revive", "restored", "due"]),
        st.sampled_from([BOB, CAROL, b"\x04" * 32, b"\x05" * 32]),
        st.integers(min_value=0, max_value=20_000),
    ),
    max_size=60,
)


@settings(max_examples=examples(300), deadline=None)
@given(ops=_OPS)
def test_the_probes_due_are_those_a_scan_of_every_outage_finds(
    ops: list[tuple[str, bytes, int]],
) -> None:
    """The heap of probe times answers as a scan of every outage does (the outbox asks at
    each re-arm, and a group's ~1,000 absent members made the scan a loop's hot spot)."""
    outages = Outages(rng=counter_rng())
    now = T0
    for op, destination, step in ops:
        now += step
        if op in ("failed", "homeless"):
            outages.failed(destination, now, homeless=op == "homeless", not_before_ms=now + step)
        elif op == "reached":
            outages.reached(destination)
        elif op == "forget":
            outages.forget(destination)
        elif op == "revive":
            outages.revive([destination])
        elif op == "restored":
            outages.restored([destination])
        down = outages._down  # the state a scan reads
        waiting = {d: o.retry_at_ms for d, o in down.items() if not o.probing}
        assert outages.next_probe_ms() == min(waiting.values(), default=None)
        if op == "due":
            expected = sorted((t, d) for d, t in waiting.items() if t <= now)
            assert outages.due_probes(now) == [d for _, d in expected]
            assert all(down[d].probing for _, d in expected)


def test_a_destination_whose_homes_refuse_the_stream_backs_off_to_the_full_cap() -> None:
    """A connected home that refused the stream (it speaks no deliver protocol, its slots are
    full) says no again: no heal brings it back, so its probes wait up to §11.5.1's minute,
    not the few seconds that find a lost path back (SPEC §11.5.2)."""
    lost, refused = Outages(rng=counter_rng()), Outages(rng=counter_rng())
    now = T0
    for _ in range(20):  # a long outage: every probe failed
        lost.failed(BOB, now)
        refused.failed(BOB, now, refused=True)
        now += BACKOFF_CAP_MS
        assert lost.due_probes(now) == refused.due_probes(now) == [BOB]
    lost.failed(BOB, now)
    refused.failed(BOB, now, refused=True)
    assert lost.due_probes(now + PROBE_MAX_MS) == [BOB]
    assert refused.due_probes(now + PROBE_MAX_MS) == []
    probe_ms = refused.next_probe_ms()
    assert probe_ms is not None and probe_ms >= now + BACKOFF_CAP_MS // 2


def test_an_outage_says_when_it_began_and_whether_no_record_named_a_home_in_it() -> None:
    """What a sender's slow message waited for (SPEC §20.6): the outage's start holds over its
    later failures, and "absent" over the record that ended it."""
    outages = Outages(rng=counter_rng())
    assert outages.reached(BOB) is None  # not down: nothing ended
    assert outages.known_nowhere(BOB, T0)  # no record names a home of bob: markers
    assert outages.revive([BOB])  # his record came
    assert not outages.failed(BOB, T0 + 5_000)  # the probe's batch found no home answering
    assert outages.reached(BOB) == (T0, True)
    outages.failed(CAROL, T0 + 1_000)
    outages.failed(CAROL, T0 + 2_000)
    assert outages.reached(CAROL) == (T0 + 1_000, False)
    assert outages.reached(CAROL) is None
