"""kill -9 durability: every append acknowledged before the kill is present and intact after.

A child process appends and prints an ack line after each committed append; the parent kills
it with SIGKILL after a random number of acks, at least 10 times on the same store, then checks
every acked record. The broken child (`--ack-before-commit`) must be caught by the same check.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from hearthmesh.storage.api import Direction
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.tools import zygote
from hearthmesh.tools.node_process import ChildProcess

from .durability_child import ABSENT

CHILD = Path(__file__).with_name("durability_child.py")
CHILD_ENTRY = f"{__package__}.durability_child:main"
KILLS = 12


def _acks(lines: list[bytes]) -> set[bytes]:
    return {
        bytes.fromhex(line.split()[1].decode())
        for line in lines
        if line.startswith(b"ack ") and line.endswith(b"\n") and len(line) == 69
    }


async def _start(argv: list[str], stderr: int) -> ChildProcess:
    """The child, forked from the worker's zygote when the suite enabled it (tests/conftest.py):
    a process of its own all the same, which the kill -9 below ends."""
    forks = zygote.shared()
    if forks is not None:
        return await forks.start(CHILD_ENTRY, [str(CHILD), *argv], stderr=stderr)
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr
    )


async def kill_repeatedly(path: Path, runs: int, rng: random.Random, *flags: str) -> set[bytes]:
    """Start the child `runs` times on `path`, SIGKILL each after a random number of acks."""
    acked: set[bytes] = set()
    errors = path.with_name(f"{path.name}.stderr")
    for run in range(runs):
        grouped = run % 2 and (not flags or flags == ("--absent",))
        mode = ("--grouped", *flags) if grouped else flags
        with errors.open("wb") as stderr:
            child = await _start([str(path), str(run), *mode], stderr.fileno())
        assert child.stdout is not None
        lines = []
        for _ in range(rng.randint(1, 300 if "--grouped" in mode else 40)):
            line = await child.stdout.readline()
            if not line:
                break
            lines.append(line)
        os.kill(child.pid, signal.SIGKILL)
        lines.extend((await child.stdout.read()).splitlines(keepends=True))  # acks written
        assert await child.wait() == -signal.SIGKILL, errors.read_text()
        acked |= _acks(lines)
    return acked


def assert_all_present(path: Path, acked: set[bytes]) -> None:
    """Every acked id is stored, and every stored event decodes to its own id."""
    with LmdbStore(path) as store:
        missing = [mid.hex()[:16] for mid in acked if store.get_event(mid) is None]
        assert not missing, f"{len(missing)} acked records missing after kill -9: {missing[:5]}"
        stored = store.page_history(b"\x42" * 32, direction=Direction.FORWARD, limit=1000)
        count = len(stored.events)
        cursor = stored.next
        while cursor is not None:  # reading decodes and checks every event: none corrupted
            page = store.page_history(
                b"\x42" * 32, direction=Direction.FORWARD, cursor=cursor, limit=1000
            )
            count += len(page.events)
            cursor = page.next
        assert count >= len(acked)


@pytest.mark.slow
async def test_kill9_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    async with asyncio.timeout(120):
        acked = await kill_repeatedly(tmp_path / "db", KILLS, rng)
    assert len(acked) >= KILLS
    assert_all_present(tmp_path / "db", acked)


async def test_the_check_catches_acks_sent_before_commit(tmp_path: Path) -> None:
    rng = random.Random(7)
    async with asyncio.timeout(60):
        acked = await kill_repeatedly(tmp_path / "db", 3, rng, "--ack-before-commit")
    with pytest.raises(AssertionError, match="acked records missing after kill -9"):
        assert_all_present(tmp_path / "db", acked)


async def test_kill9_never_loses_what_a_marker_owes_an_absent_user(tmp_path: Path) -> None:
    """SPEC §11.5.2: an envelope owed to a user whose home no record names is owed by a marker,
    committed with it; after kills -9 (single and group commits, whose numbers may commit out
    of order), the markers turn into an entry for every acknowledged envelope."""
    rng = random.Random(20261205)
    async with asyncio.timeout(60):
        acked = await kill_repeatedly(tmp_path / "db", 4, rng, "--absent")
    assert len(acked) >= 4
    assert_all_present(tmp_path / "db", acked)
    with LmdbStore(tmp_path / "db") as store:
        assert store.parked_destinations() == [ABSENT]  # a restart probes it
        assert store.unpark(ABSENT, now_ms=10**15, limit=1 << 40) >= len(acked)
        owed = store.take_due(now_ms=10**15, limit=1 << 20, lease_ms=1)
    assert {e.destination for e in owed} == {ABSENT}
    assert acked <= {e.message_id for e in owed}
