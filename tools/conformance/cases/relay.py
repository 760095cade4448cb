"""The cases of level `relay` (SPEC §20.5): envelopes held for another user's homes
(SPEC §11.2.3, §11.5). State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.hostile.forge import (
    EnvelopeForge,
    new_stranger,
)

from ..session import Session
from .case import Case
from .shared import greet_node, newcomer_home

__all__ = ["RELAY_FORWARDED_WHEN_THE_HOME_COMES", "RELAY_FOR_ANOTHER_USER", "RELAY_STRANGERS_BOUND"]

RELAY_STRANGER_BOUND: Final = 100
"""Strangers' envelopes one sending peer may have a relay hold, by default (SPEC §11.5.3)."""


async def _relay_for_another_user(s: Session) -> str:
    """A message of ours to a user who does not live on the node (SPEC §11.2.3): held in its
    relay inbox for that user's home (RELAYED, §11.3), within the bounds of §11.5.3."""
    other = UserId(s.kit.rng(32))
    envelope = s.kit.forge.message(
        direct_room_id(s.kit.user_id, other), "keep this for them", now_ms=s.kit.now_ms()
    )
    return await s.deliver([envelope.wire], recipient=other)


async def _relay_forwarded_when_the_home_comes(s: Session) -> str:
    """§11.2.3, §11.5.2: a message of ours to a newcomer whose home the node does not know yet
    is held (RELAYED); once that home says hello with the newcomer's record, the node forwards
    it there, the same bytes. What the node answered, then FORWARDED or what came instead."""
    async with newcomer_home(s, greet=False) as (newcomer, trap):
        room = direct_room_id(s.kit.user_id, newcomer.user_id)
        envelope = s.kit.forge.message(room, "held until you came", now_ms=s.kit.now_ms())
        held = await s.deliver([envelope.wire], recipient=newcomer.user_id)
        await greet_node(newcomer, s.peer_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.wait_s):
                while envelope.wire not in trap.wires:
                    trap.got_one.clear()
                    await trap.got_one.wait()
        forwarded = "FORWARDED" if envelope.wire in trap.wires else f"{len(trap.wires)}-came"
    return f"{held},{forwarded}"


async def _relay_strangers_bound(s: Session) -> str:
    """One past the 100 envelopes a stranger's peer may have held for strangers (SPEC §11.5.3),
    each from a user the node knows nothing of (our own user shares a room with the node's) to
    another random user: the excess is DEFERRED `QUOTA_EXCEEDED`, nothing evicted."""
    sender = EnvelopeForge(new_stranger(s.kit.rng, now_ms=s.kit.now_ms()))
    wires, recipients = [], []
    for _ in range(RELAY_STRANGER_BOUND + 1):
        other = UserId(s.kit.rng(32))
        room = direct_room_id(sender.stranger.user_id, other)
        wires.append(sender.message(room, "for a stranger", now_ms=s.kit.now_ms()).wire)
        recipients.append(other)
    certificate = sender.stranger.certificate_bytes
    answers = await s.deliver(wires, certificate, recipients=recipients)
    return ",".join(sorted(set(answers.split(","))))


RELAY_FOR_ANOTHER_USER: Final = Case(
    name="relay_for_another_user",
    section="§11.2.3",
    expected="RELAYED",
    run=_relay_for_another_user,
    level=Level.RELAY,
)


RELAY_STRANGERS_BOUND: Final = Case(
    name="relay_strangers_bound",
    section="§11.5.3",
    expected="DEFERRED:QUOTA_EXCEEDED,RELAYED",
    run=_relay_strangers_bound,
    hostile=True,
    level=Level.RELAY,
)

RELAY_FORWARDED_WHEN_THE_HOME_COMES: Final = Case(
    name="relay_forwarded_when_the_home_comes",
    section="§11.2.3, §11.5.2",
    expected="RELAYED,FORWARDED",
    run=_relay_forwarded_when_the_home_comes,
    level=Level.RELAY,
)
