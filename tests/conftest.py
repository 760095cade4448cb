"""Shared fixtures: a deterministic clock and deterministic randomness (CONVENTIONS §6), and
the Hypothesis profiles.

Profiles (`HYPOTHESIS_PROFILE=...`):
- `dev` (the default of a bare `pytest`): every property test runs its full count of examples.
- `quick`: a fifth of each count (at least 10). `make test` runs it: every property still runs,
  at ~5 s of the suite's CPU, not ~22 s (half of that the decoder fuzz, 100 properties of 300
  examples each). `make fuzz` runs every property (marked `hypothesis`) at its full count, the
  power `dev` keeps: run it before a merge and after a change to protocol/ or storage/.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Final, NamedTuple

import pytest
from hypothesis import HealthCheck, settings

from hearthmesh.tools import process_gc, zygote
from tests import work_counts

BYTECODE_CACHE: Final = Path(sys.prefix) / "pycache"
"""Where the suite keeps compiled modules when the environment says write none
(PYTHONDONTWRITEBYTECODE, as our shared machines set it): without them every node subprocess
compiled hearthmesh's ~49,000 lines again (0.4 of its 1.5 s of CPU to import the node) and
every pytest process re-ran the assertion rewrite of each test module. Kept in the venv, not
beside the sources, so the tree stays as clean as the variable wanted it; the environment
passes it to the nodes the tests start."""

if sys.dont_write_bytecode:
    sys.dont_write_bytecode = False
    sys.pycache_prefix = str(BYTECODE_CACHE)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)

RAM_TEMP_ROOT: Final = Path("/dev/shm")
"""Where `tmp_path` lives when the machine has a tmpfs there with room: the nodes' LMDB stores
(and the node processes' data dirs) then commit with their fsync, as a user's do, but the disk
does not make every commit wait: the nodes idle on at a few ms of CPU per second while commits
wait, so on our shared 2-core machine 258 integration, storage and API tests took 23 % less CPU
and a third less wall time (3 interleaved pairs). `PYTEST_DEBUG_TEMPROOT` is pytest's own
override of the temp root; set it (e.g. to /tmp) to run them on the disk."""
RAM_TEMP_MIN_FREE_BYTES: Final = 1 << 30


def _ram_temp_root() -> Path | None:
    try:
        stat = os.statvfs(RAM_TEMP_ROOT)
    except OSError:
        return None
    return RAM_TEMP_ROOT if stat.f_bavail * stat.f_frsize >= RAM_TEMP_MIN_FREE_BYTES else None


if "PYTEST_DEBUG_TEMPROOT" not in os.environ and (ram := _ram_temp_root()) is not None:
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(ram)  # xdist workers inherit it

ZYGOTE: Final = os.environ.get("HEARTHMESH_TEST_ZYGOTE", "1") != "0"
"""The node processes the tests start (tools/node_process.py) fork from one zygote that has
the node imported: a start then costs ~0.2-0.35 s of CPU, not ~0.8-0.9 s (tools/zygote.py).
Under xdist the controller shares one with its workers, so the node is imported once a run,
not once a worker (~0.9 s of CPU each); `-n 0` starts its own. `HEARTHMESH_TEST_ZYGOTE=0`
execs each as before. Tests of `hearthmesh run` as people start it exec the script themselves
(tests/tools/test_cli_home.py, test_public_node)."""


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before xdist starts its workers (its own sessionstart runs last): they inherit the
    shared zygote's address."""
    if not ZYGOTE:
        return
    if _is_controller(session):
        zygote.share(str(Path(tempfile.mkdtemp(prefix="hm-zygote-")) / "socket"), PRELOAD)
        _fork_workers(session.config)
    elif "PYTEST_XDIST_WORKER" in os.environ:
        zygote.enable(address=os.environ.get(zygote.ADDRESS_ENV))
    else:
        zygote.enable()


PRELOAD: Final = (
    *zygote.PRELOAD,
    # what every worker imports to collect, beside the node: forked with them imported
    "pytest",
    "hearthmesh.node.node",
    "playwright.async_api",
    "hypothesis.stateful",
)
"""The shared zygote's imports: its node processes' and the xdist workers'
(tests/xdist_zygote.py)."""

WORKER_LAUNCHER: Final = Path(__file__).with_name("xdist_zygote.py")


def _fork_workers(config: pytest.Config) -> None:
    """xdist's workers (`-n N`: N `popen` specs, read after this hook) start through the
    launcher, which has the zygote fork them."""
    tx = config.getoption("tx", None) or []
    if tx and all(spec == "popen" for spec in tx):
        python = shlex.join([sys.executable, str(WORKER_LAUNCHER)])
        config.option.tx = [f"popen//python={python}"] * len(tx)


@pytest.hookimpl(trylast=True)  # after xdist has stopped the workers (and their children)
def pytest_sessionfinish(session: pytest.Session) -> None:
    controller = _is_controller(session)
    shared_cpu_s = zygote.cpu_s() if controller else 0.0  # the import, once for the workers
    zygote.shutdown()  # reaped here, its CPU and its children's reach the worker's totals
    address = os.environ.get(zygote.ADDRESS_ENV)
    if controller and ZYGOTE and address is not None:
        Path(address).unlink(missing_ok=True)
        Path(address).parent.rmdir()
    if CPU_LOG is not None:
        _log_outside_tests(controller=controller, shared_cpu_s=shared_cpu_s)


def _is_controller(session: pytest.Session) -> bool:
    """The xdist controller: it runs no tests, its workers do."""
    return session.config.pluginmanager.has_plugin("dsession")


TUNED_GC: Final = os.environ.get("HEARTHMESH_TEST_GC", "1") != "0"
"""A pytest process collects garbage as a node process does (tools/process_gc.py): a young
collection every 50,000 net allocations, not 700, and what collection built (the modules,
libp2p, Hypothesis' strategies, 1,600 test items: ~160,000 objects) frozen, out of every later
scan. Most of the suite runs nodes and Hypothesis in the workers themselves, and the default
collector scanned that heap again and again. `HEARTHMESH_TEST_GC=0` keeps CPython's defaults."""
if TUNED_GC:
    process_gc.tune_collector()


def pytest_collection_finish() -> None:
    if TUNED_GC:
        # Frozen as it is, not collected first (process_gc.freeze_startup_objects): of the
        # ~230,000 objects collection leaves, ~700 are garbage, and the full scan that would
        # free them cost each pytest process 0.07-0.14 s of CPU.
        gc.freeze()


QUICK_SHARE: Final = 5
"""Under the `quick` profile a property test runs 1/QUICK_SHARE of its examples."""

# No per-example deadline (Hypothesis' default is 200 ms): a deadline asserts timing, which
# the suite never does; at load 80-90, test_release and test_standing failed on examples that
# took 649 and 389 ms once and under 1 ms when replayed. Ten modules had turned it off one by one.
# Nor the health check that input generation is slow, a timing check too: at load 25-45
# test_stateful failed with "only generated 4 valid inputs after 39.44 seconds".
UNTIMED: Final = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", UNTIMED)
settings.register_profile("quick", UNTIMED, max_examples=100 // QUICK_SHARE)
PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked `slow` dealt one by one to the fronts of the workers' shares (stable
    otherwise), so no worker ends alone on a long test and no worker holds them all.

    pytest-xdist's `worksteal` scheduler (pyproject addopts) gives worker k the k-th of N
    contiguous slices of this order and lets an idle worker steal the tail half of the longest
    queue. Its `load` scheduler, which we used before, handed gw0 a first chunk of a quarter of
    its share, every slow test in it, and never took that chunk back: at load ~25 one worker
    ran 538 s of tests and the other 175 s (a replay of a full run's durations through both
    schedulers; the run took 560 s). Each worker collects the same order: it must, or xdist
    stops."""
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    ordered: list[pytest.Item] = []
    for worker in range(workers):
        mine = slow[worker::workers]
        share = len(items) // workers + (1 if worker < len(items) % workers else 0)
        ordered += mine
        take = max(0, share - len(mine))
        ordered += rest[:take]
        del rest[:take]
    items[:] = ordered + rest


CPU_LOG: Final = os.environ.get("HEARTHMESH_TEST_CPU_LOG")
"""A file to which each test appends one JSON line: its wall time and the CPU seconds of the
worker (every thread) and of the processes it waited for. Wall time alone misleads on a loaded
machine; `tests/cpu_report.py` sums the lines by test and by file."""


def _children_cpu_s() -> float:
    """Processes this one reaped, and the zygote with the node processes it reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + zygote.cpu_s()


NODE_NAMES: Final = frozenset({"make_node", "Node", "home", "HostilePeer", "NodeFactory"})
"""Names whose presence in a test module (or fixtures) means the test runs nodes in-process."""


def _kind(item: pytest.Item) -> str:
    """What costs the most in the test, as far as its module and fixtures tell, for the CPU
    log's table by kind (tests/cpu_report.py puts a test whose subprocesses used CPU under
    `processes` unless it is a browser or netlab test)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    module = getattr(item, "module", None)
    names = set(vars(module)) if module is not None else set()
    if "browser" in fixtures:
        return "browser"
    if names & {"NetLab", "require_netlab"}:
        return "netlab"
    if (fixtures | names) & NODE_NAMES:
        return "in-process nodes"
    hypothesis = getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
    return "hypothesis" if hypothesis or "RuleBasedStateMachine" in names else "unit"


SESSION_TEARDOWN: Final = "(session teardown)"
"""The CPU log's line for what the session's fixtures cost at the end of the last test's
teardown: the shared Chromium's ~16 s had been charged to whichever test a worker ran last."""


class _Spent(NamedTuple):
    wall_s: float
    cpu_s: float
    children_cpu_s: float

    @classmethod
    def now(cls) -> _Spent:
        return cls(time.monotonic(), time.process_time(), _children_cpu_s())

    def __sub__(self, other: tuple[float, ...]) -> _Spent:
        return _Spent(*(mine - theirs for mine, theirs in zip(self, other, strict=True)))


_session_teardown: list[_Spent] = []
_logged = _Spent(0.0, 0.0, 0.0)
"""What this process's lines in the CPU log hold so far."""

OUTSIDE_TESTS: Final = "(outside tests)"
"""The CPU log's line, one per pytest process, for the CPU it spent outside every test: start
and collection, and between tests; the xdist controller's own (not its workers': its
children)."""


def _log(lines: list[tuple[str, str, float, _Spent, dict[str, int]]]) -> None:
    global _logged
    with open(str(CPU_LOG), "a") as log:  # one short append per line: no interleaving
        for test, kind, start, figures, work in lines:
            _logged = _Spent(*(a + b for a, b in zip(_logged, figures, strict=True)))
            line = {
                "test": test,
                "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                "kind": kind,
                "start": round(start, 3),
                **{name: round(value, 3) for name, value in figures._asdict().items()},
                **work,
            }
            log.write(json.dumps(line) + "\n")


def _log_outside_tests(*, controller: bool, shared_cpu_s: float) -> None:
    # the controller's children are its workers, whose own lines count them
    children = shared_cpu_s if controller else _children_cpu_s() - _logged.children_cpu_s
    outside = _Spent(0.0, time.process_time() - _logged.cpu_s, children)
    _log([(OUTSIDE_TESTS, OUTSIDE_TESTS, time.time(), outside, {})])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(nextitem: pytest.Item | None) -> Generator[None, object, object]:
    if CPU_LOG is None or nextitem is not None:
        return (yield)
    before = _Spent.now()
    try:
        return (yield)
    finally:
        _session_teardown.append(_Spent.now() - before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    if CPU_LOG is None:
        return (yield)
    work_counts.install()
    counted = work_counts.counts.copy()
    start, before = time.time(), _Spent.now()
    try:
        return (yield)
    finally:
        spent = _Spent.now() - before
        work = work_counts.since(counted)
        lines = [(item.nodeid, _kind(item), start, spent, work)]
        if _session_teardown:  # this was the worker's last test
            session = _session_teardown.pop()
            lines = [(item.nodeid, lines[0][1], start, spent - session, work)]
            lines.append((SESSION_TEARDOWN, SESSION_TEARDOWN, start, session, {}))
        _log(lines)


def examples(full: int) -> int:
    """`max_examples` for a test that runs `full` examples under the `dev` profile."""
    return full if PROFILE == "dev" else max(10, full // QUICK_SHARE)


class FakeClock:
    """Milliseconds that move only when a test calls `advance`."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


QUIETED_LOGGERS: Final = tuple(logging.getLogger(name) for name in ("libp2p", "multiaddr"))
"""Loggers a command quiets for its process (`hearthmesh run`, the benches: libp2p at
CRITICAL), which the tests run in their worker."""


@pytest.fixture(autouse=True)
def _logger_levels_kept() -> Iterator[None]:
    """Each test starts with the loggers' levels as the worker had them: a bench run in-process
    left libp2p at CRITICAL for every later test of its worker, and the test that libp2p's
    ERRORs still show (tests/node/test_libp2p_host.py) saw none after one (at -n 2)."""
    levels = [logger.level for logger in QUIETED_LOGGERS]
    yield
    for logger, level in zip(QUIETED_LOGGERS, levels, strict=True):
        if logger.level != level:
            logger.setLevel(level)


MDNS_LOCK: Final = Path(tempfile.gettempdir()) / "hearthmesh-tests-mdns.lock"


@pytest.fixture
def mdns_alone() -> Iterator[None]:
    """Hold a machine-wide lock while the test runs mDNS nodes: those of two tests running at
    once (two xdist workers, or two checkouts' suites) find each other and meet."""
    with MDNS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def counter_rng(label: str = "test") -> Callable[[int], bytes]:
    """Deterministic bytes: SHA-256 in counter mode over a label."""
    state = {"block": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{label}/{state['block']}".encode()).digest()
            state["block"] += 1
        return out[:n]

    return rng


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    return counter_rng()
