"""The import direction of ARCHITECTURE §2 and CONVENTIONS §1, enforced by walking the AST."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, set[str]] = {
    "protocol": {
        "asyncio",
        "trio",
        "socket",
        "lmdb",
        "time",
        "random",
        "secrets",
        "libp2p",
        "threading",
        "hearthmesh.node",
        "hearthmesh.storage",
        "hearthmesh.tools",
    },
    "storage": {"trio", "libp2p", "hearthmesh.node", "hearthmesh.tools"},
    "node": {"hearthmesh.tools"},
}
"""Package folder → top-level modules or hearthmesh packages it must never import."""


@cache  # the tests of each package and the bridge test read the same files: parsed once
def _imports(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return frozenset(names)


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[package]:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_the_import_direction(package: str) -> None:
    assert _violations(package) == []


BRIDGE_MODULES = {
    "node/p2p/bridge.py",
    "node/p2p/call_workers.py",
    "node/p2p/guest_run.py",
    "node/p2p/host.py",
    "node/p2p/gossipsub.py",
    "node/p2p/gossip_router.py",
    "node/p2p/peer_records.py",
    "node/p2p/pubsub_hello.py",
    "node/p2p/dht.py",
    "node/p2p/dht_log.py",
    "node/p2p/kad_requests.py",
    "node/p2p/varint_messages.py",
    "node/p2p/dial_answers.py",
    "node/p2p/yamux.py",
    "node/p2p/close_peer.py",
    "node/p2p/connection_manager.py",
    "node/p2p/quick_locks.py",
    "node/p2p/stream_slots.py",
    "node/p2p/autonat.py",
    "node/p2p/circuit_relay.py",
    "node/p2p/hole_punch.py",
    "node/p2p/webrtc.py",
    "node/p2p/webrtc_connection.py",
    "node/p2p/upnp.py",
    "node/p2p/own_thread.py",
    "node/p2p/mdns.py",
    "node/p2p/serving.py",
    "node/p2p/prefix_gate.py",
    "node/p2p/wire_counts.py",
    "node/p2p/kept_addrs.py",
    "node/p2p/task_parents.py",
    "node/p2p/eof_reads.py",
    "node/p2p/unweighted_scorer.py",
    "node/p2p/pipelined_select.py",
    "node/p2p/periodic_jobs.py",
}
"""The only modules that may import trio or libp2p (ARCHITECTURE §5)."""


def test_only_the_bridge_imports_trio_or_libp2p() -> None:
    importers = {
        str(path.relative_to(ROOT))
        for folder in ("protocol", "storage", "node", "tools")
        for path in (ROOT / folder).rglob("*.py")
        if any(n.split(".")[0] in {"trio", "libp2p", "multiaddr"} for n in _imports(path))
    }
    assert importers <= BRIDGE_MODULES


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom hearthmesh.storage import api\n")
    assert _imports(bad) == {"time", "hearthmesh.storage"}
