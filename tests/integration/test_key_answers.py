"""A sender's answers to our key requests (SPEC §27.13.2), from the hostile kit as that sender:
one that cannot be right is charged and takes nothing, and the right one still opens."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.tools.hostile.megolm_sender import MegolmSender
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory
from .test_devices import wait_until_readable

pytestmark = pytest.mark.integration


async def test_a_key_answer_that_cannot_be_right_is_charged_and_takes_nothing(
    make_node: NodeFactory,
) -> None:
    """Bob's home holds the kit's message and asks the kit's home for its key. A frame that is
    no answer is `MALFORMED`, and a key of another session under the asked session's id, in an
    Olm message from the kit's listed identity key, `KEY_MISMATCH`: each is charged as a whole
    frame (§11.6.1, `answer_points`). Neither is taken: the message is still held at each next
    ask (bob asks only once a request ended), and the right key, asked for next, opens it; a
    kept forged key, the first of its session id, would have stood in for it for good."""
    standing = StandingPolicy(forgive_ms=3_600_000)  # no point forgiven while the test runs
    frame_points = standing.frame_points
    async with (
        asyncio.timeout(30),
        make_node("bob", standing=standing) as bob,
        HostilePeer() as kit,
    ):
        peer = await kit.connect(bob.listen_addrs[0])
        room = direct_room_id(kit.user_id, bob.user_id)
        sender = MegolmSender(kit, room)
        await sender.announce(peer)
        theirs = bob._services.homes.own_bundle
        answers = (
            encode_canonical([2, b"no bundle", "no keys"]),
            sender.forged_answer(theirs),
            sender.answer(theirs),
        )
        seen: list[tuple[int, int]] = []  # at each next ask: (bob's points for us, held)

        async def script(n: int, _: e2ee.KeyRequest) -> bytes | None:
            held = await bob.store.read(bob.store.store.held_sessions, 10)
            seen.append((bob.peer_points(kit.peer_id), len(held)))
            return answers[n] if n < len(answers) else None

        log = sender.serve_key_requests(script)
        sent = sender.encrypted("opened by the right key alone")
        assert await kit.deliver_wires(peer, [sent.wire], bob.user_id) == ["STORED"]
        await log.wait_for(lambda log: log.ended >= len(answers))
        await wait_until_readable(bob, room)
        assert bob.key_requests_taken == 1
    assert seen == [(0, 1), (frame_points, 1), (2 * frame_points, 1)]
