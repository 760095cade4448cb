"""The collector settings of a node process (tools/process_gc.py), in a fresh interpreter so
this test process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys

from hearthmesh.tools.process_gc import THRESHOLDS

_PROBE = """
import gc, json
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector
before = gc.get_threshold()
tune_collector()
survivor = [object() for _ in range(100)]
freeze_startup_objects()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_a_node_process_collects_young_garbage_less_often_and_freezes_what_startup_built() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["before"] != list(THRESHOLDS)  # CPython's default, untouched until asked
    assert seen["after"] == list(THRESHOLDS)
    assert seen["frozen"] > 100
