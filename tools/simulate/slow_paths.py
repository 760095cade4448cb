"""Each slow message of a `simulate --scale` workload: its last member and how its copy got
there (SPEC §20.6), so a stall names itself in the report.

The last member's node noted the message if it reached its app more than two seconds after the
sender stamped it (`slow_arrivals` in its status: gossip, a deliver stream from the sender's
home or a relay, a gap fetch, or opened late by its room key); the sender's node noted each
recipient that was down and acked again (`outages_ended`: parked, or a marker while no record
named a home of it). Both are read from the statuses at the workload's end. Each slow message
says how long its send waited for its ack (its stamp), and the senders' first messages are
counted apart from the later ones.

State: none.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from hearthmesh.tools.simulate.checker import Acked, Seen

__all__ = ["KEPT", "SLOW_S", "Message", "messages_of", "slow_messages"]

SLOW_S: Final = 2.0
"""To the last member later than this: slow (the nodes note what took over 2 s too)."""

KEPT: Final = 40
"""The slowest messages listed; the counts by path cover them all."""


@dataclass(frozen=True, slots=True)
class Message:
    """One acked message as the run saw it: its sender's node, when it was sent (the run's
    seconds) and when each other member's client showed it."""

    acked: Acked
    shown_at: dict[int, float]


def slow_messages(
    messages: list[Message], statuses: list[dict[str, Any]], start_wall_s: float
) -> dict[str, Any]:
    """The slow messages' last members and paths, slowest first, and how many took each path.
    `statuses`: each node's status by index; `start_wall_s`: the wall clock at the run's 0."""
    peers = {str(s["peer_id"]): i for i, s in enumerate(statuses)}
    users = [str(s["user_id"]) for s in statuses]
    routes = [{a["message_id"]: a for a in s.get("slow_arrivals", [])} for s in statuses]
    nth: dict[str, int] = {}  # a sender's first message starts its session (SPEC §27.5)
    for sender in {m.acked.device for m in messages}:
        mine = sorted((m.acked for m in messages if m.acked.device == sender), key=_sent_at)
        nth.update((acked.message_id, n) for n, acked in enumerate(mine, 1))
    slow = []
    by_nth: dict[bool, list[float]] = {True: [], False: []}
    for message in messages:
        last = max(message.shown_at, key=message.shown_at.__getitem__)
        latency = message.shown_at[last] - message.acked.sent_at
        by_nth[nth[message.acked.message_id] == 1].append(latency)
        if latency > SLOW_S:
            slow.append((latency, last, message.acked))
    slow.sort(key=lambda item: -item[0])
    listed = []
    paths: Counter[str] = Counter()
    for latency, last, acked in slow:
        arrival = routes[last].get(acked.message_id)
        path = _path(None if arrival is None else str(arrival["route"]), acked.device, peers)
        sent_ms, acked_ms = (
            int((start_wall_s + at) * 1000) for at in (acked.sent_at, acked.acked_at)
        )
        parked = _parked(statuses[acked.device], users[last], sent_ms, acked_ms)
        paths[path + (", parked" if parked else "")] += 1
        listed.append(
            {
                "sent_s": round(acked.sent_at, 1),
                "to_last_s": round(latency, 2),
                "acked_s": round(acked.acked_at - acked.sent_at, 2),  # before its stamp
                "sender": acked.device,
                "senders_nth": nth[acked.message_id],
                "last_member": last,
                "path": path,
                "parked": parked,
            }
        )
    return {
        "over_s": SLOW_S,
        "count": len(slow),
        "by_path": dict(paths.most_common()),
        "first_sends": _sends(by_nth[True]),
        "later_sends": _sends(by_nth[False]),
        "slowest": listed[:KEPT],
    }


def _sends(latencies: list[float]) -> dict[str, Any]:
    """How many messages, their median to the last member, and how many were slow: a
    sender's first starts its session and shares its key (SPEC §27.5, §27.10)."""
    return {
        "messages": len(latencies),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "slow": sum(latency > SLOW_S for latency in latencies),
    }


def _sent_at(acked: Acked) -> float:
    return acked.sent_at


def _path(route: str | None, sender: int, peers: dict[str, int]) -> str:
    """`gossip`, `direct`, `relayed via node k`, `fetched from node k`, `opened late by its
    key`, or `unknown` (the node's note is gone, or it came within 2 s of its stamp)."""
    if route is None:
        return "unknown"
    kind, _, peer = route.partition(":")
    node = peers.get(peer)
    if kind == "deliver":
        return "direct" if node == sender else f"relayed via node {node}"
    if kind == "fetch":
        return f"fetched from node {node}"
    return "opened late by its key" if kind == "key" else kind


def _parked(
    sender: dict[str, Any], user: str, sent_ms: int, acked_ms: int
) -> dict[str, Any] | None:
    """The sender's outage of the last member that the message was sent in (its copy waited
    parked, or as a marker if no record named a home of it), if any: seconds it had been down
    at the send (negative: it went down as the send was stored, before its ack), and until it
    was acked again."""
    for outage in sender.get("outages_ended", []):
        if (
            outage["user"] == user
            and outage["since_ms"] <= acked_ms
            and sent_ms <= outage["ended_ms"]
        ):
            return {
                "down_before_s": round((sent_ms - outage["since_ms"]) / 1000, 1),
                "ended_after_s": round((outage["ended_ms"] - sent_ms) / 1000, 1),
                "no_record": outage["absent"],
            }
    return None


def messages_of(acked: list[Acked], seen: dict[int, list[Seen]]) -> list[Message]:
    """Each acked message that every other member's client showed, with when each did."""
    shown: dict[str, dict[int, float]] = {}
    for index, frames in seen.items():
        for frame in frames:
            shown.setdefault(frame.message_id, {}).setdefault(index, frame.at)
    others = len(seen) - 1
    found = []
    for message in acked:
        at = {i: t for i, t in shown.get(message.message_id, {}).items() if i != message.device}
        if len(at) == others:
            found.append(Message(message, at))
    return found
