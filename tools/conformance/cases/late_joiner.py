"""The case of a late joiner's release (SPEC §8.6, §26.5): a group's admin home ADDs the
node's user after messages the node is never given. State: none.

Its level is `im`, not `core` nor one of its own: the joining point exists only in groups,
which a `core` node does not fold (§12 and the welcome of §12.7), and no sender changes what
it sends by whether a home keeps this rule, so no peer asks for it (a level of its own serves a
sender that asks before it sends a form, §20.7).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from itertools import count
from typing import Final

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.fetch import FETCH_PROTOCOL
from hearthmesh.protocol.fetch import decode_request as decode_fetch_request
from hearthmesh.protocol.fetch import encode_answer as encode_fetch_answer
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.tools.hostile.forge import EnvelopeForge

from ..session import Session
from .case import Case
from .shared import newcomer_home

__all__ = ["LATE_JOINERS_RELEASE"]


@dataclass(frozen=True, slots=True)
class _Written:
    """The group's history as its two admins A and B wrote it, a millisecond apart in this
    order: A1 CREATE, A2 ADD B, A3 ROLE B admin, B1 ADD of a user who is away, B2 and B3
    (messages), A4 (a message), A5 ADD of the node's user, A6 and B4 (messages)."""

    room: RoomId
    a: tuple[Envelope, ...]
    b: tuple[Envelope, ...]

    @classmethod
    def by(cls, s: Session, a: EnvelopeForge, b: EnvelopeForge) -> _Written:
        nonce = s.kit.rng(16)
        room = group_room_id(a.stranger.user_id, nonce)
        at = count(s.kit.now_ms())
        create = MembershipChange(
            action=Action.CREATE, target=a.stranger.user_id, nonce=nonce, name="late joiner"
        )
        a1 = a.seal(
            Kind.MEMBERSHIP,
            room,
            encode_membership(create),
            now_ms=next(at),
            content_type=MEMBERSHIP_CONTENT_TYPE,
        )
        a2 = a.membership(room, Action.ADD, b.stranger.user_id, now_ms=next(at))
        a3 = a.membership(room, Action.ROLE, b.stranger.user_id, now_ms=next(at), role=Role.ADMIN)
        b1 = b.membership(room, Action.ADD, UserId(s.kit.rng(32)), now_ms=next(at))
        b2, b3 = (b.message(room, "before the ADD", now_ms=next(at)) for _ in range(2))
        a4 = a.message(room, "before the ADD", now_ms=next(at))
        a5 = a.membership(room, Action.ADD, s.user, now_ms=next(at))
        a6 = a.message(room, "after the ADD", now_ms=next(at))
        b4 = b.message(room, "after the ADD", now_ms=next(at))
        return cls(room=room, a=(a1, a2, a3, a4, a5, a6), b=(b1, b2, b3, b4))

    def label(self, message_id: str) -> str | None:
        """`A6`, `B4`, ...: whose envelope and its number; None for none of these."""
        for who, envelopes in (("A", self.a), ("B", self.b)):
            for envelope in envelopes:
                if envelope.message_id.hex() == message_id:
                    return f"{who}{envelope.seq}"
        return None


@dataclass(slots=True)
class _Homes:
    """Both admins' homes answer the node's fetches (SPEC §26.4): of B's numbers before the
    ADD, with the lowest asked for alone (as a home that lacks the rest would), so the node
    asks the next home for what is left; of A's, with nothing. Each ask is noted in the order
    asked (`B2-3`: B's numbers 2 to 3). The answer to B's second ask waits for `read`: what
    the node shows is read before it comes, so each outcome is one a node always gives."""

    written: _Written
    certificate_of_b: bytes
    asks: list[str] = field(default_factory=list)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    read: asyncio.Event = field(default_factory=asyncio.Event)

    async def answer(self, stream: FrameStream) -> None:
        request = decode_fetch_request(await stream.read_frame())
        of_b = request.sender_device == self.written.b[0].sender_device
        self.asks.append(f"{'B' if of_b else 'A'}{request.first_seq}-{request.last_seq}")
        self.asked.set()
        before_the_add = self.written.b[1:3] if of_b else ()
        held = [e for e in before_the_add if request.wants(e.room, e.sender_device, e.seq)]
        if of_b and self.asks_of_b() > 1:
            await self.read.wait()
        await stream.write_frame(
            encode_fetch_answer([(self.certificate_of_b, held[0].wire)] if held else [])
        )

    def asks_of_b(self) -> int:
        return sum(ask.startswith("B") for ask in self.asks)


async def _late_joiners_release(s: Session) -> str:
    """§8.6, §26.5: two admins' homes (newcomers), A and B, and the group of `_Written`. The
    node is given A's welcome (A1-A3 and A5, the ADD of its user), B1 from B's own home, then
    A6 and B4; never A4, B2 or B3. Up to A5 A's numbers are history, and B's up to B1: the
    node must wait for and ask for none of A's (A6 is released as it comes), and B4 waits on
    B2-B3, sent after B's last event it holds, so it asks B's home for them once its gap grace
    is past (1.5 s by our node's default: the case's one wait, bounded by the delivery wait).
    B's home answers B2 alone: from before the joining point and no MEMBERSHIP event, it must
    not be stored (it proves 2 is not owed), and the node asks A's home for 3. Then what the
    node's user is shown of the group: A6 and B4 (a node that stored B2 shows it before)."""
    assert s.api is not None
    async with newcomer_home(s) as (a, _), newcomer_home(s) as (b, _):
        written = _Written.by(s, a.forge, b.forge)
        homes = _Homes(written, b.stranger.certificate_bytes)
        for home in (a, b):
            home.host.set_stream_handler(FETCH_PROTOCOL, homes.answer)
        as_a = Session(kit=a, address=s.address, peer_id=s.peer_id, user=s.user)
        as_b = Session(kit=b, address=s.address, peer_id=s.peer_id, user=s.user)
        a1, a2, a3, _, a5, a6 = written.a
        b1, _, _, b4 = written.b
        for sender, given in ((as_a, [a1, a2, a3, a5]), (as_b, [b1]), (as_a, [a6]), (as_b, [b4])):
            acked = await sender.deliver([e.wire for e in given])
            if set(acked.split(",")) != {"STORED"}:
                return f"not-stored:{acked}"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.wait_s):
                while homes.asks_of_b() < 2:
                    homes.asked.clear()
                    await homes.asked.wait()
        page = await s.api.call(
            "GET", f"/v1/conversation/{written.room.hex()}/details", params={"limit": "100"}
        )
        homes.read.set()
        shown = [written.label(m["message_id"]) for m in page["messages"]]
        return f"ASKED:{','.join(homes.asks) or 'nothing'},SHOWN:{','.join(map(str, shown))}"


LATE_JOINERS_RELEASE: Final = Case(
    name="late_joiners_release",
    section="§8.6, §26.5",
    expected="ASKED:B2-3,B3-3,SHOWN:A6,B4",
    run=_late_joiners_release,
    needs_api=True,
    level=Level.IM,
)
