"""The interpreter settings of a node process (tools/process_tuning.py), in a fresh interpreter
so this test process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from hearthmesh.tools.process_tuning import SWITCH_INTERVAL_S, THRESHOLDS

_PROBE = """
import gc, json, sys
from hearthmesh.tools.process_tuning import freeze_startup_objects, tune_process
before = {"gc": gc.get_threshold(), "switch": sys.getswitchinterval()}
tune_process()
survivor = [object() for _ in range(100)]
freeze_startup_objects()
after = {"gc": gc.get_threshold(), "switch": sys.getswitchinterval()}
print(json.dumps({"before": before, "after": after, "frozen": gc.get_freeze_count()}))
"""


def _probe() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(done.stdout))


def test_a_node_process_collects_young_garbage_less_often_and_freezes_what_startup_built() -> None:
    seen = _probe()
    assert seen["before"]["gc"] != list(THRESHOLDS)  # CPython's default, untouched until asked
    assert seen["after"]["gc"] == list(THRESHOLDS)
    assert seen["frozen"] > 100


def test_a_node_process_hands_the_gil_over_within_the_switch_interval() -> None:
    seen = _probe()
    assert seen["before"]["switch"] == 0.005  # CPython's default, untouched until asked
    assert seen["after"]["switch"] == SWITCH_INTERVAL_S
