"""Standing of peers (SPEC §11.6): what a refused input costs, forgiveness, and bans.

Pure bookkeeping with the time passed in: the node reports each refusal with the peer that
sent it, and learns when a peer crossed the threshold. A refusal costs points only when the
input is the sender's fault for sure: bytes that cannot be right (malformed, oversized, a bad
signature, a forged certificate or sender, an unknown version or kind). Whatever may be right
later (clock skew, quotas, rates, a sender not yet known as a member: DEFERRED) costs nothing.

State: the instance's: points and bans per peer, bounded; its owner calls it from one thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .delivery import AckStatus, DeliveryResult
from .errors import ErrorCode

__all__ = [
    "ANSWER_OFFENCE_CODES",
    "OFFENCE_CODES",
    "Ban",
    "StandingPolicy",
    "StandingTable",
    "answer_points",
    "batch_points",
    "refusal_points",
    "result_points",
]

OFFENCE_CODES: Final = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNKNOWN_KIND,
        ErrorCode.INVALID_IDENTIFIER,
        ErrorCode.BAD_CERTIFICATE,
        ErrorCode.NOT_AUTHORIZED,
        ErrorCode.MEMBERSHIP_LIMIT,
        ErrorCode.NOT_ADDRESSED,  # a receipt sent where it is not addressed (SPEC §16.2.3)
        ErrorCode.TOO_MANY_STREAMS,
        ErrorCode.FRAME_TIMEOUT,
        ErrorCode.INVITE_INVALID,  # a forged or guessed invite secret (SPEC §30.3)
        ErrorCode.HISTORY_NOT_SHARED,  # history an honest home's own fold says is not given (§30.6)
    }
)
"""Codes that prove the sender at fault when the refusal is final. NOT_AUTHORIZED is final for a
forged sender or a refused request, never as DEFERRED (a member not yet known): callers report
only final refusals, and `result_points` ignores every DEFERRED result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StandingPolicy:
    """The numbers of SPEC §11.6."""

    frame_points: int = 25
    """A whole frame or stream request refused: the stream ends."""
    item_points: int = 10
    """One envelope (or gossip message, or home record) refused inside a good frame."""
    ban_points: int = 100
    """Reaching this many points bans the peer."""
    forgive_ms: int = 1_000
    """One point is forgiven per this many ms without offences."""
    ban_ms: int = 60_000
    """The first ban's length; each later ban of the same peer doubles it."""
    max_ban_ms: int = 24 * 3600 * 1000
    """No ban lasts longer."""
    max_peers: int = 4096
    """Peers remembered; beyond it the least recently seen peer not banned is forgotten."""
    quota_points: int = 10
    """A delivered batch some of whose envelopes a relay bound refused (SPEC §11.5.3): once
    per batch, so an honest home retrying with backoff is forgiven, a flood is banned."""


ANSWER_OFFENCE_CODES: Final = OFFENCE_CODES | {ErrorCode.KEY_MISMATCH}
"""Codes that prove the peer at fault in its answer to a key request of ours (SPEC §27.13.2):
those of any input, and a key that is not the session, sender or recipient it names, carried
in an Olm message that opened with the identity key the sender's record lists (only that device
wrote it). Not UNDECRYPTABLE (an Olm message to a key of ours we no longer hold), and the
caller charges no bundle that differs from the record we hold (it may be stale)."""


def answer_points(code: int, policy: StandingPolicy) -> int:
    """Points for a peer's answer to our own request refused with `code` (a whole frame)."""
    return policy.frame_points if code in ANSWER_OFFENCE_CODES else 0


def refusal_points(code: int, policy: StandingPolicy, *, whole_frame: bool) -> int:
    """Points for a final refusal with `code`: of a whole frame or request (the stream ends),
    or of one item (an envelope, a gossip message, a home record) inside a good frame."""
    if code not in OFFENCE_CODES:
        return 0
    return policy.frame_points if whole_frame else policy.item_points


def result_points(result: DeliveryResult, policy: StandingPolicy) -> int:
    """Points for one item's result in an ack we send: only REJECTED with an offence code."""
    if result.status is not AckStatus.REJECTED:
        return 0
    return refusal_points(result.code, policy, whole_frame=False)


def batch_points(results: Iterable[DeliveryResult], policy: StandingPolicy) -> int:
    """Points for the results of one batch we ack: each REJECTED offence, plus `quota_points`
    once if any item was DEFERRED over a relay bound (`QUOTA_EXCEEDED`)."""
    points = 0
    over_quota = False
    for result in results:
        points += result_points(result, policy)
        over_quota = over_quota or (
            result.status is AckStatus.DEFERRED and result.code == ErrorCode.QUOTA_EXCEEDED
        )
    return points + (policy.quota_points if over_quota else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ban:
    """A peer crossed the threshold: refuse it until `until_ms`."""

    peer: str
    until_ms: int
    count: int
    """How many times this peer was banned, this one included."""


@dataclass(slots=True)
class _Record:
    points: int = 0
    as_of_ms: int = 0
    """Points are counted up to this time; forgiveness runs from it."""
    banned_until_ms: int = 0
    bans: int = 0


class StandingTable:
    """Points and bans by peer id (opaque strings), bounded by `policy.max_peers`."""

    def __init__(self, policy: StandingPolicy | None = None) -> None:
        self.policy = policy or StandingPolicy()
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def banned(self, peer: str, now_ms: int) -> bool:
        """True while `peer` is banned."""
        record = self._records.get(peer)
        return record is not None and now_ms < record.banned_until_ms

    def points(self, peer: str, now_ms: int) -> int:
        """Current points of `peer`, after forgiveness up to `now_ms`."""
        record = self._records.get(peer)
        if record is None:
            return 0
        self._forgive(record, now_ms)
        return record.points

    def offend(self, peer: str, points: int, now_ms: int) -> Ban | None:
        """Charge `points` to `peer`; a Ban when this offence starts one, else None.

        Offences of a peer already banned change nothing: it is refused anyway, and what it
        sent before the ban took hold must not lengthen it.
        """
        if points <= 0 or self.banned(peer, now_ms):
            return None
        record = self._records.get(peer)
        if record is None:
            record = self._records[peer] = _Record(as_of_ms=now_ms)
            self._bound(now_ms)
        self._records.move_to_end(peer)
        self._forgive(record, now_ms)
        record.points += points
        if record.points < self.policy.ban_points:
            return None
        record.bans += 1
        length = min(self.policy.max_ban_ms, self.policy.ban_ms << min(record.bans - 1, 30))
        record.banned_until_ms = now_ms + length
        record.points = 0
        return Ban(peer=peer, until_ms=record.banned_until_ms, count=record.bans)

    def _forgive(self, record: _Record, now_ms: int) -> None:
        start = max(record.as_of_ms, record.banned_until_ms)  # no forgiveness while banned
        if now_ms <= start:
            return
        forgiven = (now_ms - start) // self.policy.forgive_ms
        record.points = max(0, record.points - forgiven)
        record.as_of_ms = start + forgiven * self.policy.forgive_ms

    def _bound(self, now_ms: int) -> None:
        """Forget the least recently charged peer that is not banned (the newest stays)."""
        while len(self._records) > self.policy.max_peers:
            older = list(self._records.items())[:-1]
            victim = next((p for p, r in older if r.banned_until_ms <= now_ms), older[0][0])
            del self._records[victim]
