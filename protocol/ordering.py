"""Per-sender ordering (SPEC §8): release events in sequence order, report gaps, drop duplicates.

Each sender (a device, per room) numbers its envelopes 1, 2, 3, ... An event that arrives early
waits in a bounded reorder window until the events before it arrive; `gaps()` names what to
fetch from the sender's home node. Pure and synchronous: the caller decides when to fetch.

State: the instance's: per sender, the next number expected and the events waiting in the
reorder window; its owner calls it from one thread.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from .errors import SequenceOverflow

__all__ = ["REORDER_WINDOW", "Gap", "SenderSequencer"]

REORDER_WINDOW: Final = 4096
"""How far past its next expected number one sender's events may be held (SPEC §8)."""

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap(Generic[K]):
    """Sequence numbers `first..last` (inclusive) of `sender` are missing."""

    sender: K
    first: int
    last: int


class SenderSequencer(Generic[K, T]):
    """Reorders items of many senders; every sender starts at sequence 1 unless told otherwise."""

    def __init__(self, *, window: int = REORDER_WINDOW) -> None:
        self._window = window
        self._next: dict[K, int] = {}
        self._pending: dict[K, dict[int, T]] = {}

    def next_seq(self, sender: K) -> int:
        """The next sequence number `sender` must deliver to advance."""
        return self._next.get(sender, 1)

    def resume(self, sender: K, next_seq: int) -> None:
        """Start `sender` at `next_seq` (a restart: everything before it is already released)."""
        self._next[sender] = max(self.next_seq(sender), next_seq)
        pending = self._pending.get(sender, {})
        for seq in [s for s in pending if s < next_seq]:
            del pending[seq]

    def skip_to(self, sender: K, next_seq: int) -> list[T]:
        """Owe `sender` nothing before `next_seq` (SPEC §8.6: history before our joining point):
        return what was held below it, then the run it frees from `next_seq` on, in order."""
        if next_seq <= self.next_seq(sender):
            return []
        pending = self._pending.get(sender, {})
        released = [pending.pop(seq) for seq in sorted(s for s in pending if s < next_seq)]
        expected = next_seq
        while expected in pending:
            released.append(pending.pop(expected))
            expected += 1
        self._next[sender] = expected
        if not pending:
            self._pending.pop(sender, None)
        return released

    def offer(self, sender: K, seq: int, item: T) -> list[T]:
        """Take one item; return the items now releasable, in order (maybe none).

        A duplicate (already released or already held) returns [] and changes nothing.

        Raises:
            SequenceOverflow: `seq` lies beyond the reorder window; nothing is held.
        """
        expected = self.next_seq(sender)
        if seq < expected:
            return []
        pending = self._pending.setdefault(sender, {})
        if seq in pending:
            return []
        if seq >= expected + self._window:
            if not pending:
                del self._pending[sender]
            raise SequenceOverflow(f"seq {seq} is beyond the window ({expected}+{self._window})")
        pending[seq] = item
        released: list[T] = []
        while expected in pending:
            released.append(pending.pop(expected))
            expected += 1
        self._next[sender] = expected
        if not pending:
            del self._pending[sender]
        return released

    def gaps(self) -> list[Gap[K]]:
        """Every missing range that holds a later item back, per sender, in sequence order."""
        found: list[Gap[K]] = []
        for sender, pending in self._pending.items():
            expected = self.next_seq(sender)
            for seq in sorted(pending):
                if seq > expected:
                    found.append(Gap(sender=sender, first=expected, last=seq - 1))
                expected = seq + 1
        return found

    def held(self) -> int:
        """How many items wait for an earlier one."""
        return sum(len(p) for p in self._pending.values())
