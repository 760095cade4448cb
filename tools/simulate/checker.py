"""The invariants of a `hearthmesh simulate` run (SPEC §20.4), checked over what its clients saw.

Pure: the workload records, this judges. "Acked" is a send its client saw `message_sent` for
(durable on the sender's home, SPEC §15.4.1). Every acked message must reach every other
device of every member exactly once (its client's `message` frames, and its history), each
device's history must hold each sender device's messages in rising sequence order (SPEC §4.5, §8.2),
and a `delivered` or `read` receipt from a user must come after one of that user's devices
acked the message (SPEC §16). The order of the frames themselves is counted, not judged: they
come in the order the node stored the events (SPEC §15.4.3), which a held-back envelope can
break (`feed_out_of_order`, allowed by SPEC §8.2: clients place by history order).

State: none.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Acked", "Receipt", "Seen", "Verdict", "check", "missing_on"]

_EXAMPLES = 5
"""Violations named in the report per kind (the counts are whole)."""


@dataclass(frozen=True, slots=True)
class Acked:
    """A message its sender's client saw `message_sent` for."""

    message_id: str
    device: int
    sent_at: float
    acked_at: float


@dataclass(frozen=True, slots=True)
class Seen:
    """A `message` frame of the room, as one device's client got it."""

    message_id: str
    sender_device: str
    seq: int
    at: float
    connection: int = 1
    """Which connection of its client it came on (a reconnect replays by cursor first)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A `receipt` frame: `user` (an index) moved `message_id` to `status`."""

    message_id: str
    user: int
    status: str
    at: float


@dataclass
class Verdict:
    """What the checker found; `ok` when no invariant was broken."""

    expected: int = 0
    """(acked message, recipient device) pairs."""
    delivered: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    """In a device's history (SPEC §8.2)."""
    history_duplicates: list[str] = field(default_factory=list)
    history_missing: list[str] = field(default_factory=list)
    feed_out_of_order: list[str] = field(default_factory=list)
    """Frames of one sender device that came below a number already shown (reported only)."""
    early_receipts: list[str] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(sent at, seconds until it was on a recipient device), one per delivered pair."""

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in _JUDGED)

    def as_json(self) -> dict[str, object]:
        kinds = (*_JUDGED, "feed_out_of_order")
        return {
            "expected": self.expected,
            "delivered": self.delivered,
            **{name: len(getattr(self, name)) for name in kinds},
            "examples": {name: getattr(self, name)[:_EXAMPLES] for name in kinds},
        }


_JUDGED: Final = (
    "missing",
    "duplicates",
    "out_of_order",
    "history_duplicates",
    "history_missing",
    "early_receipts",
)


def missing_on(acked: Sequence[Acked], seen: Mapping[int, Sequence[Seen]]) -> int:
    """How many (acked message, other device) pairs are not shown yet (0: converged)."""
    shown = {device: {s.message_id for s in frames} for device, frames in seen.items()}
    return sum(
        1
        for a in acked
        for device, ids in shown.items()
        if device != a.device and a.message_id not in ids
    )


def check(
    acked: Sequence[Acked],
    seen: Mapping[int, Sequence[Seen]],
    acks: Mapping[int, Mapping[str, float]],
    receipts: Sequence[Receipt],
    device_user: Sequence[int],
    histories: Mapping[int, Sequence[Seen]] | None = None,
) -> Verdict:
    """Judge a run.

    Args:
        acked: the acked sends.
        seen: per device (index), the room's `message` frames its client got, in order.
        acks: per device, when its client acked each message (`ack delivered`).
        receipts: the receipts the senders' clients got.
        device_user: the user (index) of each device.
        histories: per device, the room's messages in its history order, read at the end.
    """
    verdict = Verdict()
    at: dict[tuple[int, str], float] = {}
    for device, frames in seen.items():
        verdict.duplicates += _twice(frames, device)
        verdict.feed_out_of_order += _below(frames, device)
        for s in frames:
            at.setdefault((device, s.message_id), s.at)
    for device, history in (histories or {}).items():
        verdict.history_duplicates += _twice(history, device)
        verdict.out_of_order += _below(history, device)
        held = {s.message_id for s in history}
        verdict.history_missing += [
            f"{a.message_id} on device {device}"
            for a in acked
            if a.device != device and a.message_id not in held
        ]
    for a in acked:
        for device in seen:
            if device == a.device:
                continue
            verdict.expected += 1
            arrived = at.get((device, a.message_id))
            if arrived is None:
                verdict.missing.append(f"{a.message_id} on device {device}")
            else:
                verdict.delivered += 1
                verdict.latencies.append((a.sent_at, max(0.0, arrived - a.sent_at)))
    for r in receipts:
        if r.status not in ("delivered", "read"):
            continue
        acked_at = [
            when[r.message_id]
            for device, when in acks.items()
            if device_user[device] == r.user and r.message_id in when
        ]
        if not acked_at or min(acked_at) > r.at:
            verdict.early_receipts.append(f"{r.status} of {r.message_id} by user {r.user}")
    return verdict


def _twice(items: Sequence[Seen], device: int) -> list[str]:
    counts = Counter(s.message_id for s in items)
    return [f"{m} x{n} on device {device}" for m, n in counts.items() if n > 1]


def _below(items: Sequence[Seen], device: int) -> list[str]:
    """Each item of a sender device below a number of that device already passed."""
    last: dict[str, int] = defaultdict(int)
    found = []
    for s in items:
        if s.seq <= last[s.sender_device]:
            again = "" if s.connection == 1 else f" (connection {s.connection})"
            found.append(
                f"device {device}: {s.sender_device} seq {s.seq} after {last[s.sender_device]}"
                + again
            )
        last[s.sender_device] = max(last[s.sender_device], s.seq)
    return found
