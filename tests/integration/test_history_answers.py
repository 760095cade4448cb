"""An admin's answers to our history request (SPEC §30.6.4), from the hostile kit as the admin
whose home let bob in: one that cannot be right is charged and takes nothing, a refusal the
admin's home is entitled to is not charged, and the right answer still opens the message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import (
    HistoryNotShared,
    KeyMismatch,
    KeyRequestDenied,
    MalformedMessage,
    RateLimited,
    RemoteProtocolError,
)
from hearthmesh.protocol.history_share import HistoryRequest
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.membership import Action, Role
from hearthmesh.tools.hostile.megolm_sender import MegolmSender
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import UNFORGIVING, NodeFactory, node_and_kit
from .test_devices import wait_until_readable

pytestmark = pytest.mark.integration


@dataclass(frozen=True, slots=True)
class _Admitted:
    """Bob in a `shared` group whose admin is the kit; the kit's ADD (of someone) stands for
    the one that let bob in, and bob holds the kit's message, whose key it never got."""

    bob: Node
    kit: HostilePeer
    sender: MegolmSender
    group: RoomId
    add: MessageId

    async def ask(self) -> int:
        """Bob's home asks the kit's for the history (`HistoryFetch.after_join`)."""
        return await self.bob._services.groups._history.after_join(
            self.kit.peer_id, self.group, self.add
        )

    async def held(self) -> int:
        return len(await self.bob.store.read(self.bob.store.store.held_sessions, 10))


@asynccontextmanager
async def _kit_is_the_admin(make_node: NodeFactory) -> AsyncIterator[_Admitted]:
    async with node_and_kit(make_node, "bob") as (bob, kit):
        peer = await kit.connect(bob.listen_addrs[0])
        group = await bob.create_group("g", [])
        await bob.add_member(group, kit.user_id)
        await bob.groups.set_role(group, kit.user_id, Role.ADMIN)
        await bob.groups.set_history(group, "shared", 10)
        sender = MegolmSender(kit, group)
        await sender.announce(peer)
        add = kit.forge.membership(group, Action.ADD, UserId(kit.rng(32)), now_ms=kit.now_ms())
        sent = sender.encrypted("given with the history")
        acked = await kit.deliver_wires(peer, [add.wire, sent.wire], bob.user_id)
        assert acked == ["STORED", "STORED"]
        yield _Admitted(bob, kit, sender, group, add.message_id)


async def test_a_history_answer_that_cannot_be_right_is_charged_and_takes_nothing(
    make_node: NodeFactory,
) -> None:
    """A frame that is no answer (`MALFORMED`), another session's key under the held
    session's id and the right key naming another device as its recipient (each
    `KEY_MISMATCH`, in an Olm message from the admin's listed identity key) are each charged
    as a whole frame (§11.6.1, `answer_points`), and none is taken: the message stays held,
    and the right answer, asked for next, opens it."""
    async with asyncio.timeout(30), _kit_is_the_admin(make_node) as it:
        theirs = it.bob._services.homes.own_bundle
        answers = (
            encode_canonical([2, b"no bundle", "no keys"]),
            it.sender.forged_answer(theirs),
            it.sender.misaddressed_answer(theirs, DeviceId(it.kit.rng(32))),
            it.sender.answer(theirs),
        )

        async def script(n: int, asked: HistoryRequest) -> bytes:
            assert asked == HistoryRequest(room=it.group, user=it.bob.user_id)
            return answers[n]

        it.sender.serve_history(script)
        seen: list[tuple[type[RemoteProtocolError], int, int]] = []
        for error in (MalformedMessage, KeyMismatch, KeyMismatch):
            with pytest.raises(error):
                await it.ask()
            seen.append((error, it.bob.peer_points(it.kit.peer_id), await it.held()))
        assert await it.ask() == 1
        await wait_until_readable(it.bob, it.group)
    frame = UNFORGIVING.frame_points
    assert seen == [
        (MalformedMessage, frame, 1),
        (KeyMismatch, 2 * frame, 1),
        (KeyMismatch, 3 * frame, 1),
    ]


async def test_an_admins_refusals_and_another_devices_answer_are_not_charged(
    make_node: NodeFactory,
) -> None:
    """The refusals an admin's home may give (`HISTORY_NOT_SHARED`, `KEY_REQUEST_DENIED`,
    `RATE_LIMITED`: its fold or its copy of our record may differ from ours, or we asked too
    soon) are answers, and an answer whose bundle is not the one the admin's record we hold
    lists (`HISTORY_NOT_SHARED`, our copy may be stale, as §27.13.2) takes nothing: none costs
    a point, and the message stays held until the right answer opens it."""
    async with asyncio.timeout(30), _kit_is_the_admin(make_node) as it:
        theirs = it.bob._services.homes.own_bundle
        stale = MegolmSender(it.kit, it.group)  # the same device id, another bundle
        answers = (
            it.sender.refusal(HistoryNotShared("this group shares no history")),
            it.sender.refusal(KeyRequestDenied("not listed here")),
            it.sender.refusal(RateLimited("too soon")),
            stale.answer(theirs),
            it.sender.answer(theirs),
        )

        async def script(n: int, _: HistoryRequest) -> bytes:
            return answers[n]

        it.sender.serve_history(script)
        for error in (HistoryNotShared, KeyRequestDenied, RateLimited, HistoryNotShared):
            with pytest.raises(error):
                await it.ask()
            assert (it.bob.peer_points(it.kit.peer_id), await it.held()) == (0, 1)
        assert await it.ask() == 1
        await wait_until_readable(it.bob, it.group)
        assert it.bob.peer_points(it.kit.peer_id) == 0
