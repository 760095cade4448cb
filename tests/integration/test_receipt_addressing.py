"""Receipts go to the message's sender, not to every member (SPEC §8.5, §16.2.3).

Real homes on 127.0.0.1 with their client API: in a group of three, alice's home gets bob's
and carol's receipts and the aggregate, carol's home never stores bob's receipt and sees no gap
in bob's sequence; a receipt delivered or gossiped where it is not addressed is refused with
NOT_ADDRESSED (16) and charged. With a home that does not advertise the revisions (SPEC §20.7)
among those an event reaches, the form before goes to everyone, and no home charges another.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol import receipts
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.errors import MembershipConflict
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action, decode_membership
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.tools.hostile.peer import HostilePeer

from .api_helpers import GroupOfThree, Socket, group_of_three, home, link
from .conftest import NodeFactory, direct_room_with, refused_where_not_addressed

pytestmark = pytest.mark.integration


async def _receipt_senders(node: Node, room: RoomId) -> set[UserId]:
    """Whose RECEIPT envelopes `node` stores in `room`."""
    page = await node.history(room, limit=500)
    return {e.envelope.sender_user for e in page.events if e.envelope.kind is Kind.RECEIPT}


async def _receipts_until_both(alice_ws: Socket, message_id: str) -> dict[str, Any]:
    """alice's `receipt` frames for `message_id` until both recipients are credited, in
    whichever order they came; the last frame (its aggregate is over both)."""
    statuses: dict[str, str] = {}
    while True:
        frame = await alice_ws.next("receipt", lambda f: f["message_id"] == message_id)
        statuses[frame["user_id"]] = frame["status"]
        if len(statuses) == 2:
            frame["statuses"] = statuses
            return frame


async def _hello_all(group: GroupOfThree) -> dict[str, Any]:
    """alice's message to the group, once both other members have it: her `message_sent`."""
    alice_ws, bob_ws, carol_ws = group.sockets
    await alice_ws.send(event="send", room_id=group.room, message="hello all", client_id="g1")
    sent: dict[str, Any] = await alice_ws.next("message_sent")
    for ws in (bob_ws, carol_ws):
        await ws.next("message", lambda f: f.get("room_id") == group.room)
    return sent


async def test_a_groups_receipts_reach_the_senders_homes_alone_and_leave_no_gap(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(90), group_of_three(tmp_path) as group:
        a, b, c = group.homes
        alice_ws, bob_ws, carol_ws = group.sockets
        _, bob, carol = group.users
        room = group.room
        sent = await _hello_all(group)
        await bob_ws.send(event="ack", message_id=sent["message_id"], status="read")
        await carol_ws.send(event="ack", message_id=sent["message_id"], status="delivered")
        last = await _receipts_until_both(alice_ws, sent["message_id"])
        assert last["statuses"] == {bob: "read", carol: "delivered"}
        assert last["aggregate"] == "delivered"  # SPEC §16.4: the lowest over both

        # bob's receipt is committed on his home (alice has it): his next message, a
        # sequenced one, is shown to carol with nothing in between to wait for (SPEC §8.5)
        await bob_ws.send(event="send", room_id=room, message="after my receipt", client_id="b1")
        later = await bob_ws.next("message_sent")
        shown = await carol_ws.next("message", lambda f: f.get("message_id") == later["message_id"])
        assert shown["message"] == "after my receipt"
        await alice_ws.next("message", lambda f: f.get("message_id") == later["message_id"])

        group_room = RoomId(bytes.fromhex(room))
        bob_id, carol_id = b.node.user_id, c.node.user_id
        assert await _receipt_senders(a.node, group_room) == {bob_id, carol_id}
        assert await _receipt_senders(c.node, group_room) == {carol_id}  # only its own
        assert await _receipt_senders(b.node, group_room) == {bob_id}


async def test_a_big_groups_members_send_read_receipts_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §16.2.4: in a room of more than DELIVERED_RECEIPTS_MAX_MEMBERS members (here 2, so
    three homes stand for a big group), an ack of "delivered" moves the member's own status
    and sends nothing; "read" still reaches the sender's home."""
    monkeypatch.setattr(receipts, "DELIVERED_RECEIPTS_MAX_MEMBERS", 2)
    async with asyncio.timeout(90), group_of_three(tmp_path) as group:
        a, b, c = group.homes
        alice_ws, bob_ws, carol_ws = group.sockets
        _, bob, carol = group.users
        room = group.room
        sent = await _hello_all(group)
        mid = sent["message_id"]
        await bob_ws.send(event="ack", message_id=mid, status="delivered")
        await carol_ws.send(event="ack", message_id=mid, status="read")
        frame = await alice_ws.next("receipt", lambda f: f["message_id"] == mid)
        assert (frame["user_id"], frame["status"]) == (carol, "read")
        await bob_ws.send(event="ack", message_id=mid, status="read")
        frame = await alice_ws.next("receipt", lambda f: f["message_id"] == mid)
        assert (frame["user_id"], frame["status"]) == (bob, "read")
        page = await a.node.history(RoomId(bytes.fromhex(room)), limit=500)
        senders = [e.envelope.sender_user for e in page.events if e.envelope.kind is Kind.RECEIPT]
        assert sorted(senders) == sorted([b.node.user_id, c.node.user_id])  # one each: reads


async def test_a_receipt_delivered_or_gossiped_where_it_is_not_addressed_is_refused_and_charged(
    make_node: NodeFactory,
) -> None:
    """Mallory's receipt names only her own message and is delivered to bob's home: bob's
    home refuses it NOT_ADDRESSED, stores nothing and charges her; the same receipt on the
    room's gossip topic is dropped by the topic check and charged too."""
    async with asyncio.timeout(30), make_node("bob") as bob, HostilePeer() as mallory:
        room, hers = await direct_room_with(bob, mallory)
        forge = mallory.forge
        body = encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=(hers.message_id,)))

        def receipt() -> Envelope:
            return forge.seal(
                Kind.RECEIPT, room, body, now_ms=mallory.now_ms(), content_type=RECEIPT_CONTENT_TYPE
            )

        await refused_where_not_addressed(bob, mallory, room, receipt)


async def test_a_home_that_does_not_advertise_the_revisions_gets_their_forms_before(
    tmp_path: Path,
) -> None:
    """alice's home advertises what a node before the revisions does (SPEC §20.7): bob's group
    with her and carol is formed by one ADD per user, not one ADD of both (§12.1.1), and bob's
    receipt of her message goes sequenced to every member (carol's home stores it), not
    addressed to her homes alone (§16.2.3). Every home takes every form; nobody is charged."""
    older = frozenset({Level.ADD_SEVERAL, Level.ADDRESSED_RECEIPTS})
    async with (
        asyncio.timeout(90),
        home(tmp_path / "a", withheld_levels=older) as a,
        home(tmp_path / "b") as b,
        home(tmp_path / "c") as c,
    ):
        for one, other in ((a, b), (a, c), (b, c)):
            await link(one, other)
        alice, carol = [(await h.status())["user_id"] for h in (a, c)]
        async with a.socket() as alice_ws, b.socket() as bob_ws, c.socket() as carol_ws:
            group = await b.client.call(
                "POST", "/v1/groups", {"name": "mixed", "members": [alice, carol]}
            )
            room = group["id"]
            for ws in (alice_ws, carol_ws):
                await ws.next(
                    "membership", lambda f: f["room_id"] == room and len(f["members"]) == 3
                )
            await alice_ws.send(
                event="send", room_id=room, message="from the older home", client_id="o1"
            )
            sent = await alice_ws.next("message_sent")
            await bob_ws.next("message", lambda f: f.get("message_id") == sent["message_id"])
            await bob_ws.send(event="ack", message_id=sent["message_id"], status="read")
            frame = await alice_ws.next("receipt", lambda f: f["message_id"] == sent["message_id"])
            assert frame["status"] == "read"

        group_room = RoomId(bytes.fromhex(room))
        bob_id = b.node.user_id
        while bob_id not in await _receipt_senders(c.node, group_room):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the receipt reaches carol's home in its own time
        page = await c.node.history(group_room, limit=500)
        adds = [
            decode_membership(e.envelope.body)
            for e in page.events
            if e.envelope.kind is Kind.MEMBERSHIP
        ]
        assert [len(change.targets) for change in adds if change.action is Action.ADD] == [1, 1]
        receipts = [e.envelope for e in page.events if e.envelope.kind is Kind.RECEIPT]
        assert all(r.seq != UNSEQUENCED for r in receipts if r.sender_user == bob_id)
        for one in (a, b, c):
            for other in (a, b, c):
                if other is not one:
                    assert one.node.peer_points(other.node.peer_id) == 0


async def test_one_add_per_user_for_an_older_home_is_still_all_or_none(
    make_node: NodeFactory,
) -> None:
    """With a home that has not advertised `add-several` among the audience, an ADD of several
    users goes out as one ADD per user (SPEC §20.7), but is refused whole as the several-user
    ADD would be (§12.1.1): a user already a member late in the list adds no one before it."""
    older = frozenset({Level.ADD_SEVERAL})
    async with (
        asyncio.timeout(30),
        make_node("alice", withheld_levels=older) as alice,
        make_node("bob") as bob,
    ):
        await bob.connect(alice.listen_addrs[0])
        room = await bob.create_group("mixed", [alice.user_id])
        carol = UserId(os.urandom(32))
        with pytest.raises(MembershipConflict):
            await bob.add_members(room, [carol, alice.user_id])
        assert await bob.members(room) == {bob.user_id, alice.user_id}
