"""An admin's home's answers to our join request (SPEC §30.4), from the hostile kit as the
home an invite names: a frame that is no answer is charged, a refusal is not."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.delivery import encode_error
from hearthmesh.protocol.errors import InviteInvalid, MalformedMessage
from hearthmesh.protocol.invites import JOIN_PROTOCOL, Invite, encode_invite
from hearthmesh.protocol.rooms import group_room_id

from .conftest import UNFORGIVING, NodeFactory, node_and_kit

pytestmark = pytest.mark.integration


async def test_a_join_answer_that_is_no_answer_is_charged_and_a_refusal_is_not(
    make_node: NodeFactory,
) -> None:
    """Carol joins by an invite naming the kit's home. Its first answer is a frame that is
    neither the ADD's id nor an ERROR frame: `MALFORMED`, charged as a whole frame (§11.6.1);
    its second an ERROR `INVITE_INVALID`, a refusal the admin's home may give: not charged."""
    async with (
        asyncio.timeout(30),
        node_and_kit(make_node, "carol") as (carol, kit),
    ):
        kit.answer_hellos()
        answers = [encode_canonical([9, "no answer"]), encode_error(InviteInvalid("no such"))]
        asked: list[bytes] = []

        async def answer(stream: FrameStream) -> None:
            asked.append(await stream.read_frame())
            await stream.write_frame(answers[len(asked) - 1])

        kit.host.set_stream_handler(JOIN_PROTOCOL, answer)
        room = group_room_id(kit.user_id, kit.rng(16))
        addrs = (kit.host.listen_addrs[0],)  # with /p2p/
        link = encode_invite(Invite(room=room, secret=kit.rng(16), addrs=addrs))
        with pytest.raises(MalformedMessage):
            await carol.groups.join_by_invite(link)
        charged = carol.peer_points(kit.peer_id)
        with pytest.raises(InviteInvalid):
            await carol.groups.join_by_invite(link)
        assert len(asked) == 2
    assert charged == UNFORGIVING.frame_points
    assert carol.peer_points(kit.peer_id) == charged
