"""The `hearthmesh` console script: version, help, and the benchmark harness's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.protocol.capabilities import Level
from hearthmesh.tools.cli import main

SCRIPT = Path(sys.executable).parent / "hearthmesh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def run_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`main` in this process: the exit code, stdout and stderr. For what does not need the
    console script itself (the version test starts that), without a Python start each."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's --help and usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def quick_bench(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
    """`bench NAME --quick` in this process: its one JSON object, checked to be that bench's."""
    code, out, err = run_here(capsys, "bench", name, "--quick")
    assert code == 0, err
    figures: dict[str, Any] = json.loads(out)
    assert figures["benchmark"] == name
    return figures


def test_version_names_package_and_protocol() -> None:
    result = run("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hearthmesh 0.")
    assert "protocol v0" in result.stdout


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_here(capsys, "--help")
    assert code == 0
    assert "version" in out and "bench" in out


def test_the_conformance_suite_can_be_told_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    """SPEC §20.5: `--level` names any level, the revisions' (`add-several`, ...) too."""
    for level in Level:
        code, _, err = run_here(
            capsys, "conformance", "node", "--peer", "x", "--level", level, "-h"
        )
        assert code == 0, err


def test_bench_list_names_codec(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_here(capsys, "bench", "--list")
    assert code == 0
    assert "codec" in out.split()


def test_unknown_bench_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_here(capsys, "bench", "nope")
    assert code == 2
    assert "unknown benchmark" in err


def test_bench_group_refuses_more_members_than_a_group_is_built_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_here(capsys, "bench", "group", "--members", "1025")
    assert code == 2
    assert "--members is 10 to 1024" in err


def test_bench_codec_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    figures = quick_bench(capsys, "codec")
    assert figures["encode_per_s"] > 0 and figures["decode_per_s"] > 0
    assert figures["machine"]["cpu_count"] >= 1
    load = figures["machine"]["load_1min"]  # the run's figures come with the machine's load
    assert load["before"] >= 0 and load["after"] >= 0


@pytest.mark.slow
def test_bench_sync_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    figures = quick_bench(capsys, "sync")
    assert set(figures["diff_bytes"]) == {"1", "10", "100", "1000"}
    assert figures["insync_round_trips"] >= 1 and figures["new_device_bytes"] > 0
    assert figures["new_device_round_trips"] >= 2  # quick still spans frames (SPEC §21.6.2)


def test_bench_node_cost_prints_the_cycle_and_an_idle_mesh(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = quick_bench(capsys, "node-cost")
    assert all(figures[f"cycle_{p}_cpu_ms"] > 0 for p in ("start_two", "connect", "stop_two"))
    idle = figures["idle_2_nodes"]
    assert set(idle["cpu_pct_per_node_by_thread"]) >= {"loop", "trio"}
    assert idle["loop_callbacks_per_node_per_s"]  # something woke the loop: it was counted


def test_bench_send_counts_counts_what_a_same_node_message_costs_its_home(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = quick_bench(capsys, "send-counts")
    counts = figures["calls_per_msg"]  # the counted window in alice's node process saw the sends
    assert counts["staged_writes"] > 0 and counts["lmdb_txns"] > 0
    assert counts["cbor_dumps"] > 0 and counts["json_frames_out"] >= 2  # sent, and echoed
    assert figures["python_calls_per_msg"] > 100 and figures["top_calls_per_msg"]
    cpu = figures["cpu_us_per_msg"]  # the plain window's
    assert cpu["loop_user"] + cpu["loop_system"] > 0 and cpu["all"] >= cpu["loop"] > 0
    assert figures["counters_per_msg"]["transactions"] > 0
    assert counts["feed_passes"] >= 1  # the sends' own (`catch_up`)
    bob = figures["receiver"]  # the receiving home, in the same windows
    assert bob["calls_per_msg"]["feed_passes"] > 0 and bob["python_calls_per_msg"] > 100


def test_bench_e2ee_prints_one_json_object_with_messages_keys_and_media(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = quick_bench(capsys, "e2ee")
    assert figures["encrypt_sign_us"] > 0 and figures["verify_decrypt_us"] > 0
    assert set(figures["room_key_share_ms"]) == {"10", "100"}
    assert set(figures["media"]) == {"1mib", "10mib"}
    assert all(f["seal_mb_s"] > 0 and f["open_mb_s"] > 0 for f in figures["media"].values())


def test_bench_api_control_measures_the_relay_and_the_stored_relay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = quick_bench(capsys, "api-control")
    for run_name in ("relay", "stored"):
        name = f"{run_name}_same_node"
        assert figures[f"{name}_p99_ms"] >= figures[f"{name}_p50_ms"] > 0
        assert figures[f"{name}_p99_over_p50"] >= 1 and figures[f"{name}_msgs_per_s"] > 0
    assert figures["relay_same_node_commits_per_msg"] == 0
    assert figures["stored_same_node_commits_per_msg"] == 1  # each send's own durable commit
