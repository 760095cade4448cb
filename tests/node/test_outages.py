"""Which destinations are down (node/delivery/outages.py, SPEC §11.5.2): parking, probes."""

from __future__ import annotations

from hearthmesh.node.delivery.outages import PROBE_MAX_MS, Outages
from hearthmesh.protocol.backoff import BACKOFF_BASE_MS, BACKOFF_CAP_MS

from ..conftest import FakeClock, counter_rng

BOB = b"\x02" * 32
CAROL = b"\x03" * 32


def test_new_entries_park_only_after_two_failures_in_a_row() -> None:
    outages = Outages(clock=FakeClock(), rng=counter_rng())
    assert not outages.parking(BOB)
    assert outages.failed(BOB)  # it was up until now
    assert not outages.parking(BOB)  # one failure may be a hiccup: new batches still try
    assert not outages.failed(BOB)
    assert outages.parking(BOB)
    assert outages.reached(BOB)  # an ack from one of its homes
    assert not outages.parking(BOB) and not outages.reached(BOB)


def test_a_probe_is_due_after_the_backoff_and_only_once() -> None:
    clock = FakeClock()
    outages = Outages(clock=clock, rng=counter_rng())
    outages.failed(BOB)
    outages.failed(BOB)
    assert outages.due_probes() == []
    clock.advance(BACKOFF_BASE_MS * 2)  # the delay after a second failure is at most that
    assert outages.due_probes() == [BOB]
    assert outages.due_probes() == []  # probing: not handed out twice
    assert not outages.parking(BOB)  # the probe batch goes out
    outages.failed(BOB)  # the probe failed: parked again, at least half of base * 4 to wait
    assert outages.parking(BOB)
    clock.advance(BACKOFF_BASE_MS * 2 - 1)
    assert outages.due_probes() == []


def test_a_home_that_connects_is_probed_at_once_and_a_restart_probes_everything() -> None:
    clock = FakeClock()
    outages = Outages(clock=clock, rng=counter_rng())
    for _ in range(5):
        outages.failed(BOB)
        outages.failed(CAROL)
    assert not outages.revive(lambda destination: False)
    assert outages.revive(lambda destination: destination == BOB)
    assert outages.due_probes() == [BOB]
    restarted = Outages(clock=clock, rng=counter_rng())
    restarted.restored([BOB, CAROL])
    assert restarted.due_probes() == [BOB, CAROL]


def test_a_long_outage_is_probed_at_least_every_probe_max() -> None:
    """Issue #12 availability (b): a healed partition brings no connection; the probe finds
    the home back. Before, its delay grew to a minute and the backlog waited 30-40 s."""
    clock = FakeClock()
    outages = Outages(clock=clock, rng=counter_rng())
    for _ in range(20):  # a long outage: every probe failed
        outages.failed(BOB)
        clock.advance(BACKOFF_CAP_MS)
        assert outages.due_probes() == [BOB]
    outages.failed(BOB)
    clock.advance(PROBE_MAX_MS)
    assert outages.due_probes() == [BOB]


def test_a_home_that_connects_during_a_probe_is_probed_again_when_it_ends() -> None:
    clock = FakeClock()
    outages = Outages(clock=clock, rng=counter_rng())
    for _ in range(5):
        outages.failed(BOB)
    clock.advance(PROBE_MAX_MS)
    assert outages.due_probes() == [BOB]  # a probe dials while the home is still away
    assert not outages.revive(lambda destination: destination == BOB)  # it connects now
    outages.failed(BOB)  # that probe's dial had failed
    assert outages.due_probes() == [BOB]  # no backoff: the home is there
    outages.failed(BOB)
    assert outages.due_probes() == []  # an ordinary failure waits again
