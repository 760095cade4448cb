"""The LMDB store's read gate (storage/lmdb_store.py `_ReadGate`): a map resize waits for the
snapshots open on other threads, and a snapshot asked for meanwhile waits for the resize."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hearthmesh.storage.lmdb_store import _ReadGate

_DEADLINE_S = 5.0


def _wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.001)


@contextmanager
def _snapshot(gate: _ReadGate) -> Iterator[None]:
    """What a snapshot does with the gate (`_Snapshot`): enter, then leave when it closes."""
    gate.enter()
    try:
        yield
    finally:
        gate.leave()


def test_a_resize_waits_for_open_snapshots_and_new_ones_wait_for_it() -> None:
    gate = _ReadGate()
    order: list[str] = []
    resizing = threading.Event()

    def resize() -> None:
        with gate.resizing():
            resizing.set()
            order.append("resized")
            time.sleep(0.05)  # a snapshot asked for now must wait until the block ends
            order.append("resize done")

    def read() -> None:
        with _snapshot(gate):
            order.append("late read")

    with _snapshot(gate):
        resizer = threading.Thread(target=resize, daemon=True)
        resizer.start()
        _wait_until(lambda: gate._resizing)  # it waits for this snapshot
        assert not resizing.is_set()
        order.append("read done")
    assert resizing.wait(_DEADLINE_S), "the resize was never woken"
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    resizer.join(_DEADLINE_S)
    reader.join(_DEADLINE_S)
    assert not resizer.is_alive() and not reader.is_alive()
    assert order == ["read done", "resized", "resize done", "late read"]
