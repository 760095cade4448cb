"""The `joiner_release` vector operation (SPEC §8.6): what a late joiner's release order does
with one sender device's envelopes, over the group as the joiner holds it.

A case: `room_hex`, `events_hex` (the group's MEMBERSHIP events the joiner holds, its ADD
among them), `user_hex` (the joiner's user) and `arrivals`, that device's envelopes in the
order they come, each `[hex, "stored" | "fetched"]` (delivered, or a gap fetch's answer item).
Its fields: `released`, the numbers that go to the app in that order; `passed`, the fetched
numbers not owed (not stored); `gaps`, the ranges still waited for (and fetched).
"""

from __future__ import annotations

from typing import Any

from hearthmesh.protocol.arrival import ArrivalRules
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, decode_envelope
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import RoomState
from hearthmesh.protocol.membership_log import MembershipLog
from hearthmesh.protocol.release import SenderReleases

__all__ = ["joiner_release"]


class _OneGroup:
    """The one group the joiner holds (`protocol.arrival.RoomStates`)."""

    def __init__(self, log: MembershipLog) -> None:
        self._log = log

    def state(self, room: RoomId) -> RoomState | None:
        return self._log.state if room == self._log.room else None

    def membership_log(self, room: RoomId) -> MembershipLog:
        return self._log


def _place(envelope: Envelope) -> tuple[Timestamp, bytes, int]:
    return envelope.order_key  # history order (SPEC §4.5), whatever order they came in


def joiner_release(case: dict[str, Any]) -> Any:
    """§8.6: history (before the joining point) is released as it comes and owes nothing up to
    its number; a fetched item from before it that is not a MEMBERSHIP event is passed over."""
    room = RoomId(bytes.fromhex(case["room_hex"]))
    events = sorted((decode_envelope(bytes.fromhex(w)) for w in case["events_hex"]), key=_place)
    rooms = _OneGroup(MembershipLog.load(room, events))
    rules = ArrivalRules({UserId(bytes.fromhex(case["user_hex"]))})
    machine = SenderReleases()
    released: list[int] = []
    passed: list[int] = []
    for wire, how in case["arrivals"]:
        envelope = decode_envelope(bytes.fromhex(wire))
        history = rules.before_joining(envelope, rooms)
        sender = (envelope.room, envelope.sender_device)
        if not machine.knows(sender):
            start = rules.first_seq_if_new(envelope, history=history)
            machine.resume(sender, envelope.sender_user, start, last_stored=0)
        if how == "fetched" and history and envelope.kind is not Kind.MEMBERSHIP:
            step = machine.pass_over(envelope)
            passed.append(envelope.seq)
        else:
            step = machine.offer(envelope, history=history)
        released += [e.seq for e in step.released]
    gaps = [[gap.first, gap.last] for gap in machine.gaps()]
    return {"released": released, "passed": passed, "gaps": gaps}
