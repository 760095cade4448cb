"""The mesh simulator (SPEC §20.3): seeded runs keep every invariant and converge, the same seed
replays the same run, and the checker catches a node that breaks a rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.delivery import AckStatus, DeliveryResult
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.tools.cli import main
from hearthmesh.tools.conformance.sim_node import SimNode
from hearthmesh.tools.conformance.simulate import SimConfig, simulate

from ..conftest import examples


@settings(max_examples=examples(40), deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    nodes=st.integers(min_value=2, max_value=5),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_any_seeded_run_keeps_the_invariants_and_converges(
    seed: int, nodes: int, loss: float
) -> None:
    report = simulate(SimConfig(seed=seed, steps=300, nodes=nodes, loss=loss))
    assert report.violations == []
    assert report.converged, report.as_json()
    assert report.written > 0 and report.acked > 0


def test_one_seed_is_one_run() -> None:
    config = SimConfig(seed=7, steps=500)
    assert simulate(config).as_json() == simulate(config).as_json()


# The run's trace, not only its counts: a hash of every command each node's outbox machine
# gives and every batch each node receives, in the order they happen (a changed order of
# sends or acks can leave every count of the report as it was).
_TRACED_RUN = """
import hashlib, json, sys
from hearthmesh.tools.conformance.sim_node import SimNode
from hearthmesh.tools.conformance.simulate import SimConfig, simulate

trace = hashlib.sha256()

class Traced(SimNode):
    def handle(self, commands, now_ms):
        trace.update(repr((self.index, now_ms, commands)).encode())
        super().handle(commands, now_ms)

    def receive(self, envelopes):
        trace.update(repr((self.index, [e.message_id for e in envelopes])).encode())
        return super().receive(envelopes)

seed, steps, nodes = map(int, sys.argv[1:])
report = simulate(SimConfig(seed=seed, steps=steps, nodes=nodes), Traced)
print(json.dumps({**report.as_json(), "trace": trace.hexdigest()}))
"""


def test_one_seed_is_one_run_in_any_process() -> None:
    """Nothing depends on the order of a set of bytes, which changes with PYTHONHASHSEED: the
    same seed gives the same trace (every command and batch, in order) under three hash seeds."""
    argv = [sys.executable, "-c", _TRACED_RUN, "42", "2000", "5"]
    # The three at once: each spends most of its time importing, on a core of its own.
    runs = [
        subprocess.Popen(argv, env={**os.environ, "PYTHONHASHSEED": str(h)}, stdout=subprocess.PIPE)
        for h in (1, 2, 3)
    ]
    outputs = {run.communicate(timeout=300)[0] for run in runs}
    assert [run.returncode for run in runs] == [0, 0, 0]
    assert len(outputs) == 1, outputs


def test_faults_and_reconciliations_happen_and_nothing_acked_is_lost_through_them() -> None:
    report = simulate(SimConfig(seed=11, steps=2_000, nodes=4, loss=0.2))
    assert report.ok, report.as_json()
    assert report.crashes > 0 and report.partitions > 0 and report.frames_lost > 0
    assert report.syncs > 0 and report.synced > 0


class ShowsOnArrival(SimNode):
    """Broken: shows each new envelope as it arrives, not in its sender's order."""

    def receive(self, envelopes: list[Envelope]) -> list[DeliveryResult]:
        results = []
        for envelope in envelopes:
            if envelope.message_id not in self.stored:
                self.stored[envelope.message_id] = envelope
                self.app.append(envelope)
            results.append(DeliveryResult(message_id=envelope.message_id, status=AckStatus.STORED))
        return results


class AcksWithoutStoring(SimNode):
    """Broken: acks a batch it keeps only in memory, so a crash loses what it acked."""

    def receive(self, envelopes: list[Envelope]) -> list[DeliveryResult]:
        return [DeliveryResult(message_id=e.message_id, status=AckStatus.STORED) for e in envelopes]


def test_the_checker_catches_release_out_of_order() -> None:
    report = simulate(SimConfig(seed=3, steps=3_000, loss=0.3), ShowsOnArrival)
    assert not report.ok
    assert any("showed seq" in v for v in report.violations), report.violations


def test_the_checker_catches_an_ack_before_the_commit() -> None:
    report = simulate(SimConfig(seed=3, steps=300), AcksWithoutStoring)
    assert not report.ok and not report.converged
    assert any("not stored" in v for v in report.violations), report.violations


def test_the_command_prints_one_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "simulate", "--seed", "5", "--steps", "300", "--nodes", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["seed"] == 5 and report["nodes"] == 3
