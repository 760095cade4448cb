"""The cases of level `im` on our user among others (SPEC §32): the node's own presence pushed
to its user's contacts, a blocked user's envelopes, and the friendship that makes a newcomer a
contact (`befriend`). State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.content import (
    CONTACT_CONTENT_TYPE,
    ContactAction,
    ContactEvent,
    encode_contact,
)
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import user_id_text
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.signals import decode_signal
from hearthmesh.tools.hostile.peer import HostilePeer, SignalTrap

from ..session import Session
from .case import Case
from .shared import newcomer_home

__all__ = ["BLOCKED_USER_DROPPED", "PRESENCE_PUSHED_TO_CONTACTS", "PRESENCE_WAIT_S", "befriend"]

PRESENCE_WAIT_S: Final = 25.0
"""How long a case waits for two of the node's presence rounds: two of our node's default
interval (10 s, SPEC §32.4.1) and slack."""


async def befriend(s: Session, friend: HostilePeer) -> str | None:
    """`friend` asks the node's user for friendship (STORED) and is accepted over the API
    (SPEC §17.2): a contact from then on. None when it is, else what happened."""
    assert s.api is not None
    request = encode_contact(ContactEvent(action=ContactAction.REQUEST, note="conformance"))
    asked = Session(kit=friend, address=s.address, peer_id=s.peer_id, user=s.user)
    room = direct_room_id(friend.user_id, s.user)
    envelope = friend.forge.seal(
        Kind.MESSAGE, room, request, now_ms=s.kit.now_ms(), content_type=CONTACT_CONTENT_TYPE
    )
    if (stored := await asked.deliver([envelope.wire])) != "STORED":
        return f"friend-request-{stored}"
    await s.api.call("POST", f"/v1/friends/requests/{user_id_text(friend.user_id)}/accept")
    return None


async def _presence_pushed_to_contacts(s: Session) -> str:
    """§32.4.1: the node pushes its user's presence to each home of each contact, one frame
    per stream on `/hearthmesh/signals/0`, every presence interval, and to no one else. A
    newcomer becomes a contact; its home must get the node's ONLINE, verifying, from the
    node's user, with a record naming the node as a home. Once it got two (so every push of
    the first round was written), our stranger, no contact, must have got none."""
    stranger = s.kit.catch_signals()
    async with newcomer_home(s) as (friend, _):
        pushes = friend.catch_signals()
        if (refused := await befriend(s, friend)) is not None:
            return refused
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PRESENCE_WAIT_S):
                while len(pushes.frames) < 2:
                    pushes.got_one.clear()
                    await pushes.got_one.wait()
        return f"CONTACT:{_said(s, pushes)},STRANGER:{_said(s, stranger)}"


def _said(s: Session, trap: SignalTrap) -> str:
    """What the first two pushes to `trap` said, each kind once in the order it came: a
    presence status, TYPING, or why it was no presence of the node's user; `none` if none."""
    said = []
    for frame in trap.frames[:2]:
        try:
            signal = decode_signal(frame, now_ms=s.kit.now_ms())
        except HearthError as exc:
            said.append(f"invalid:{type(exc).__name__}")
            continue
        presence = signal.presence
        if signal.item.envelope.sender_user != s.user:
            said.append("another-user")
        elif presence is None:
            said.append("TYPING")
        elif s.peer_id not in presence.home_record.homes:
            said.append("a-record-without-the-node")
        else:
            said.append(presence.status.name)
    return "+".join(dict.fromkeys(said)) or "none"


async def _blocked_user_dropped(s: Session) -> str:
    """§32.3.2: once the node's user blocks a newcomer (over the API), the newcomer's next
    message is acked STORED, as any stored one (nothing tells them), and stored nothing: the
    node's user is not shown it. The ack follows the commit (§11.3), so what was stored shows
    by then. SHOWN: the newcomer's numbers shown in the room, 1 (from before the block)."""
    assert s.api is not None
    async with newcomer_home(s) as (newcomer, _):
        room = direct_room_id(newcomer.user_id, s.user)
        as_newcomer = Session(kit=newcomer, address=s.address, peer_id=s.peer_id, user=s.user)
        before, after = (
            newcomer.forge.message(room, text, now_ms=s.kit.now_ms()) for text in ("1", "2")
        )
        if (stored := await as_newcomer.deliver([before.wire])) != "STORED":
            return f"before-block:{stored}"
        await s.api.call("PUT", f"/v1/friends/blocked/{user_id_text(newcomer.user_id)}")
        acked = await as_newcomer.deliver([after.wire])
        page = await s.api.call(
            "GET", f"/v1/conversation/{room.hex()}/details", params={"limit": "100"}
        )
        ours = {e.message_id.hex(): e.seq for e in (before, after)}
        shown = [str(ours[m["message_id"]]) for m in page["messages"] if m["message_id"] in ours]
        return f"BLOCKED:{acked},SHOWN:" + ",".join(shown)


BLOCKED_USER_DROPPED: Final = Case(
    name="blocked_user_dropped",
    section="§32.3.2",
    expected="BLOCKED:STORED,SHOWN:1",
    run=_blocked_user_dropped,
    needs_api=True,
    level=Level.IM,
)

PRESENCE_PUSHED_TO_CONTACTS: Final = Case(
    name="presence_pushed_to_contacts",
    section="§32.4.1",
    expected="CONTACT:ONLINE,STRANGER:none",
    run=_presence_pushed_to_contacts,
    needs_api=True,
    level=Level.IM,
)
