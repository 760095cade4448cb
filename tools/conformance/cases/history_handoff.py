"""The case of a joiner's history handoff (SPEC §30.6.4): the kit is the admin whose home lets
the node's user into a `shared` group, and answers its history requests as scripted. State:
none.

Its level is `e2ee`: what a history answer carries are Megolm keys over Olm (§27.12.2), which
only a node with Megolm on its message path takes (§27.15.1).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.errors import HearthError, HistoryNotShared
from hearthmesh.protocol.history_share import HistoryRequest
from hearthmesh.protocol.invites import JOIN_PROTOCOL, Invite, encode_invite, encode_join_answer
from hearthmesh.protocol.membership import (
    HISTORY_SHARED,
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    encode_membership,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.tools.hostile.megolm_sender import MegolmSender
from hearthmesh.tools.hostile.peer import HostilePeer

from ..session import Session
from .case import Case
from .held_keys import shown_as
from .shared import newcomer_home, node_bundle

__all__ = ["HISTORY_ANSWERS_FORGED_THEN_RIGHT"]

_TEXT: Final = "given with the history"


def _change(admin: HostilePeer, room: RoomId, change: MembershipChange, at_ms: int) -> Envelope:
    return admin.forge.seal(
        Kind.MEMBERSHIP,
        room,
        encode_membership(change),
        now_ms=at_ms,
        content_type=MEMBERSHIP_CONTENT_TYPE,
    )


async def _forged_then_right(s: Session) -> str:
    """§30.6.4, §27.12.2: a newcomer creates a group that shares history, seals a Megolm
    message, then ADDs the node's user; the node holds the message (its key never shared). The
    node's user joins by an invite naming the newcomer's home, four times (each join asks for
    the history): the first answer is a key of another session under the message's session id
    (`KEY_MISMATCH`), the second a frame that is no answer (`MALFORMED`), the third a refusal
    (`HISTORY_NOT_SHARED`), the fourth the right key. The message stays held after each of the
    first three (nothing of a bad answer is kept: a node that kept the forged key, the first
    of its session id, would never open it) and opens at the last."""
    assert s.api is not None
    theirs = await node_bundle(s)
    if isinstance(theirs, str):
        return theirs
    async with newcomer_home(s, greet=False) as (admin, _):
        nonce = s.kit.rng(16)
        room = group_room_id(admin.user_id, nonce)
        sender = MegolmSender(admin, room)
        admin.answer_hellos(bundles=(sender.bundle,))  # the join's hello keeps our bundle
        await sender.announce(s.peer_id)
        now = admin.now_ms()
        create = MembershipChange(
            action=Action.CREATE, target=admin.user_id, nonce=nonce, name="history handoff"
        )
        shares = MembershipChange(
            action=Action.HISTORY,
            target=admin.user_id,
            name=HISTORY_SHARED,
            nonce=(10).to_bytes(2, "big"),
        )
        written = [_change(admin, room, create, now - 10), _change(admin, room, shares, now - 9)]
        message = sender.encrypted(_TEXT)
        add = admin.forge.membership(room, Action.ADD, s.user, now_ms=now + 10)
        for wires in ([*[e.wire for e in written], add.wire], [message.wire]):
            got = ",".join(await admin.deliver_wires(s.peer_id, wires, s.user))
            if set(got.split(",")) != {"STORED"}:
                return f"DELIVERED:{got}"

        async def let_in(stream: FrameStream) -> None:
            await stream.read_frame()
            await stream.write_frame(encode_join_answer(add.message_id))

        admin.host.set_stream_handler(JOIN_PROTOCOL, let_in)
        answers = (
            sender.forged_answer(theirs),
            e2ee.encode_forward_request([(RoomId(bytes(32)), bytes(32))]),  # no answer
            sender.refusal(HistoryNotShared("not for you")),
            sender.answer(theirs),
        )

        async def script(n: int, _: HistoryRequest) -> bytes | None:
            return answers[n] if n < len(answers) else None

        log = sender.serve_history(script)
        link = encode_invite(
            Invite(room=room, secret=s.kit.rng(16), addrs=(admin.host.listen_addrs[0],))
        )
        room_hex, message_hex = room.hex(), message.message_id.hex()
        shown: list[str] = []
        for n in range(len(answers)):
            with contextlib.suppress(HearthError, TimeoutError):
                async with asyncio.timeout(s.wait_s + 10):
                    await s.api.call("POST", "/v1/groups/join", {"link": link})
            asked = len(log.requests) > n  # the join's answer is read before the call returns
            shown.append(await shown_as(s, room_hex, message_hex, _TEXT) if asked else "not-asked")
        forged, malformed, refused, right = shown
        return f"FORGED:{forged},MALFORMED:{malformed},REFUSED:{refused},RIGHT:{right}"


HISTORY_ANSWERS_FORGED_THEN_RIGHT: Final = Case(
    name="history_answers_forged_then_right",
    section="§30.6.4, §27.12.2",
    expected="FORGED:held,MALFORMED:held,REFUSED:held,RIGHT:OPENED",
    run=_forged_then_right,
    needs_api=True,
    level=Level.E2EE,
)
